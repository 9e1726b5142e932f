"""The console's rights requests: the queue, due first, and a request's page with a form per
API action. Each form posts to the very service function the API route calls
(app.routers.rights), validated by the same model, in a savepoint: a refused action keeps
nothing and the page says why.
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, RedirectResponse, Response

from app.core.db import SessionDep
from app.core.errors import Unprocessable
from app.core.pagination import Cursor
from app.models.catalogue import Purpose
from app.models.rights import (
    Complete,
    Extend,
    Pause,
    Reject,
    RightsRequestCreate,
    RightStatus,
    RightType,
    VerifyIdentity,
)
from app.models.subject import PERSONAL_FIELDS, to_public
from app.services.catalogue import entries as catalogue
from app.services.rights import clock as rights_clock
from app.services.rights import exports, queue
from app.services.rights import requests as rights
from app.services.subjects import records
from app.web.console.common import Posted, Viewer, attempt, reader, render, writer

router = APIRouter(include_in_schema=False)
Reader = Annotated[Viewer, Depends(reader("rights:read"))]
Writer = Annotated[Posted, Depends(writer("rights:write"))]
Creator = Annotated[Posted, Depends(writer("rights:create"))]
Action = Callable[[Posted, uuid.UUID], Awaitable[Any]]


@router.get("/console/")
async def console_requests(
    session: SessionDep,
    viewer: Reader,
    status: Literal["open"] | RightStatus = "open",
    type: RightType | Literal[""] | None = None,
    person: Annotated[str | None, Query(max_length=254)] = None,
    cursor: Cursor = None,
) -> Response:
    """The rights requests, soonest due first, with the open ones counted by state."""
    page = await queue.due_first(
        session, status=status, type_=type or None, person=person, cursor=cursor
    )
    return render(
        "requests.html",
        viewer,
        page=page,
        counts=await queue.open_counts(session),
        filters={"status": status, "type": type or "", "person": person or ""},
    )


async def request_page(
    session: SessionDep, viewer: Viewer, request_id: uuid.UUID, status: int = 200, **extra: Any
) -> Response:
    req = await rights.get_with_history(session, request_id)
    subject = None
    if req.subject_id is not None:
        subject = to_public(await records.get_subject(session, req.subject_id))
    return render(
        "request.html",
        viewer,
        status,
        req=req,
        subject=subject,
        purposes=await catalogue.descriptions(session, Purpose),
        personal_fields=[f for f in PERSONAL_FIELDS],
        **extra,
    )


@router.get("/console/requests/{request_id}")
async def console_request(
    request_id: uuid.UUID,
    session: SessionDep,
    viewer: Reader,
    done: Annotated[str | None, Query(max_length=30)] = None,
) -> Response:
    return await request_page(session, viewer, request_id, done=done)


@router.get("/console/requests/{request_id}/export")
async def console_request_export(
    request_id: uuid.UUID,
    session: SessionDep,
    _: Reader,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """The access report or the portable data, to download (the API's export)."""
    media_type, content = await exports.export(session, request_id=request_id, fmt=format)
    disposition = {"Content-Disposition": f'attachment; filename="{request_id}.{format}"'}
    if media_type == "application/json":
        return JSONResponse(content, headers=disposition)
    return Response(content, media_type=media_type, headers=disposition)


async def _act(
    session: SessionDep, posted: Posted, request_id: uuid.UUID, name: str, action: Action
) -> Response:
    """One action: done, back to the request's page; refused, the page says why."""
    _, error, status = await attempt(session, lambda: action(posted, request_id))
    if error is None:
        return RedirectResponse(f"/console/requests/{request_id}?done={name}", status_code=303)
    return await request_page(session, posted.viewer, request_id, status, error=error, failed=name)


def _fields(posted: Posted, *names: str) -> dict[str, Any]:
    """The filled-in fields: a blank one is left out, as an API client would leave it."""
    return {n: v for n in names if (v := posted.one(n)) is not None}


async def _verify(session: SessionDep, posted: Posted, request_id: uuid.UUID) -> Any:
    data = VerifyIdentity.model_validate(_fields(posted, "method", "note"))
    return await rights.verify_identity(
        session, posted.viewer.principal, request_id=request_id, data=data
    )


async def _extend(session: SessionDep, posted: Posted, request_id: uuid.UUID) -> Any:
    data = Extend.model_validate(_fields(posted, "months", "reason"))
    return await rights.extend(session, posted.viewer.principal, request_id=request_id, data=data)


async def _pause(session: SessionDep, posted: Posted, request_id: uuid.UUID) -> Any:
    data = Pause.model_validate(_fields(posted, "reason", "note"))
    return await rights_clock.pause(
        session, posted.viewer.principal, request_id=request_id, data=data
    )


async def _resume(session: SessionDep, posted: Posted, request_id: uuid.UUID) -> Any:
    return await rights_clock.resume(session, posted.viewer.principal, request_id=request_id)


async def _complete(session: SessionDep, posted: Posted, request_id: uuid.UUID) -> Any:
    """Rectification's new values (fields `change_<name>`) and the purposes of a withdrawal
    or an objection, as the API's `Complete` body takes them."""
    changes = {
        name: value
        for name in (*PERSONAL_FIELDS, "category", "source")
        if (value := posted.one(f"change_{name}")) is not None
    }
    body: dict[str, Any] = {"changes": changes or None}
    if posted.many("purposes"):
        body["purposes"] = posted.many("purposes")
    data = Complete.model_validate(body)
    return await rights.complete(session, posted.viewer.principal, request_id=request_id, data=data)


async def _reject(session: SessionDep, posted: Posted, request_id: uuid.UUID) -> Any:
    data = Reject.model_validate(_fields(posted, "reason", "code", "article"))
    return await rights.reject(session, posted.viewer.principal, request_id=request_id, data=data)


ACTIONS = {
    "verify-identity": _verify,
    "extend": _extend,
    "pause": _pause,
    "resume": _resume,
    "complete": _complete,
    "reject": _reject,
}


def _route(name: str) -> None:
    """One POST route per API action, each to its own service function."""
    service = ACTIONS[name]

    async def endpoint(request_id: uuid.UUID, session: SessionDep, posted: Writer) -> Response:
        return await _act(session, posted, request_id, name, lambda p, r: service(session, p, r))

    endpoint.__name__ = f"console_{name.replace('-', '_')}"
    router.post(f"/console/requests/{{request_id}}/{name}")(endpoint)


for _name in ACTIONS:
    _route(_name)


@router.post("/console/requests")
async def console_create_request(session: SessionDep, posted: Creator) -> Response:
    """A request taken down by the privacy team for a person (the API's create)."""
    from app.web.console.subjects import subject_page  # the page the form sits on

    subject_id = posted.one("subject_id")
    body = {**_fields(posted, "type", "subject_id", "details", "received_at")}

    async def create() -> Any:
        data = RightsRequestCreate.model_validate(body)
        return await rights.create_request(session, posted.viewer.principal, data=data)

    made, error, status = await attempt(session, create)
    if error is None and made is not None:
        return RedirectResponse(f"/console/requests/{made.id}?done=created", status_code=303)
    try:
        return await subject_page(
            session, posted.viewer, uuid.UUID(str(subject_id)), status, error=error
        )
    except ValueError:  # no subject to go back to: the form was not ours
        raise Unprocessable(error) from None
