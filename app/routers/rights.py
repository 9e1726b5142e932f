"""Rights requests (crm; website may create) and their report (auditors)."""

import uuid
from collections.abc import Awaitable
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from app.core.auth import Principal, require
from app.core.db import ReadSessionDep, SessionDep
from app.core.errors import problem_responses
from app.core.idempotency import idempotent
from app.core.pagination import Cursor, Limit, Page
from app.models.rights import (
    Complete,
    Extend,
    Pause,
    Reject,
    RightsReport,
    RightsRequestCreate,
    RightsRequestPublic,
    RightStatus,
    RightType,
    VerifyIdentity,
)
from app.services.rights import clock as rights_clock
from app.services.rights import deadline_report, exports
from app.services.rights import requests as rights

router = APIRouter(prefix="/v1", tags=["rights requests"])
Creator = Annotated[Principal, Depends(require("rights:create"))]
Writer = Annotated[Principal, Depends(require("rights:write"))]
Reader = Annotated[Principal, Depends(require("rights:read"))]
ReportReader = Annotated[Principal, Depends(require("reports:read"))]
SubjectWriter = Annotated[Principal, Depends(require("subjects:write"))]
ACTION_ERRORS = problem_responses(401, 403, 404, 409, 413, 422)


class _Changed(Protocol):
    """What a transition hands back (the request row; routers never touch the table)."""

    id: uuid.UUID


async def _answer(session: SessionDep, changed: Awaitable[_Changed]) -> RightsRequestPublic:
    """The changed request as `GET /v1/rights-requests/{id}` shows it, history included
    (API.md: every answer about a request carries it): the GET's own read, not a second
    rendering."""
    return await rights.get_with_history(session, (await changed).id)


@router.post(
    "/rights-requests",
    status_code=201,
    response_model=RightsRequestPublic,
    responses=problem_responses(401, 403, 404, 413, 422),
)
async def create_rights_request(
    body: RightsRequestCreate, request: Request, session: SessionDep, principal: Creator
) -> JSONResponse:
    """Receive a request; the due date follows Art 12(3) and UK working days."""

    async def create() -> tuple[int, Any]:
        return 201, await _answer(session, rights.create_request(session, principal, data=body))

    return await idempotent(session, principal, request, body, create)


@router.get(
    "/rights-requests",
    response_model=Page[RightsRequestPublic],
    responses=problem_responses(401, 403, 422),
)
async def list_rights_requests(
    session: SessionDep,
    _: Reader,
    status: RightStatus | None = None,
    type: RightType | None = None,
    subject_id: Annotated[
        uuid.UUID | None, Query(description="Only this subject's requests")
    ] = None,
    overdue: bool = False,
    paused: Annotated[
        bool | None,
        Query(description="true: only paused requests (clock stopped); false: only running"),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[RightsRequestPublic]:
    """Requests by status, type and subject, each with its history; `overdue=true` lists
    open requests past due (a paused request is never overdue); `paused=true` lists those
    whose clock is stopped. The filters combine."""
    return await rights.list_requests(
        session,
        status=status,
        type_=type,
        subject_id=subject_id,
        overdue=overdue,
        limit=limit,
        cursor=cursor,
        paused=paused,
    )


@router.get(
    "/rights-requests/{request_id}",
    response_model=RightsRequestPublic,
    responses=problem_responses(401, 403, 404, 422),
)
async def get_rights_request(
    request_id: uuid.UUID, session: SessionDep, _: Reader
) -> RightsRequestPublic:
    """One request with its history of transitions."""
    return await rights.get_with_history(session, request_id)


@router.post(
    "/rights-requests/{request_id}/verify-identity",
    response_model=RightsRequestPublic,
    responses=ACTION_ERRORS,
)
async def verify_rights_request_identity(
    request_id: uuid.UUID, body: VerifyIdentity, session: SessionDep, principal: Writer
) -> RightsRequestPublic:
    """Record how the requester's identity was verified."""
    return await _answer(
        session, rights.verify_identity(session, principal, request_id=request_id, data=body)
    )


@router.post(
    "/rights-requests/{request_id}/extend",
    response_model=RightsRequestPublic,
    responses=ACTION_ERRORS,
)
async def extend_rights_request(
    request_id: uuid.UUID, body: Extend, session: SessionDep, principal: Writer
) -> RightsRequestPublic:
    """Extend once, before the due date, by one or two months, with a reason."""
    return await _answer(
        session, rights.extend(session, principal, request_id=request_id, data=body)
    )


@router.post(
    "/rights-requests/{request_id}/pause",
    response_model=RightsRequestPublic,
    responses=ACTION_ERRORS,
)
async def pause_rights_request(
    request_id: uuid.UUID, body: Pause, session: SessionDep, principal: Writer
) -> RightsRequestPublic:
    """Stop the clock while waiting for the person (identity, clarification, a fee).

    Only an open request, not already paused, before its due date (else 409). While
    paused it is not overdue; `note` stays out of the history and the audit log."""
    return await _answer(
        session, rights_clock.pause(session, principal, request_id=request_id, data=body)
    )


@router.post(
    "/rights-requests/{request_id}/resume",
    response_model=RightsRequestPublic,
    responses=ACTION_ERRORS,
)
async def resume_rights_request(
    request_id: uuid.UUID, session: SessionDep, principal: Writer
) -> RightsRequestPublic:
    """Restart the clock (409 when not paused): the due date moves by the calendar days
    paused (UK dates, pause day to resume day), then to the next working day."""
    return await _answer(session, rights_clock.resume(session, principal, request_id=request_id))


@router.post(
    "/rights-requests/{request_id}/complete",
    response_model=RightsRequestPublic,
    responses=ACTION_ERRORS,
)
async def complete_rights_request(
    request_id: uuid.UUID, body: Complete, session: SessionDep, principal: Writer
) -> RightsRequestPublic:
    """Perform the request (identity must be verified) and mark it completed."""
    return await _answer(
        session, rights.complete(session, principal, request_id=request_id, data=body)
    )


@router.post(
    "/rights-requests/{request_id}/reject",
    response_model=RightsRequestPublic,
    responses=ACTION_ERRORS,
)
async def reject_rights_request(
    request_id: uuid.UUID, body: Reject, session: SessionDep, principal: Writer
) -> RightsRequestPublic:
    """Refuse the request. `reason` alone is enough; `code` defaults to `other`, and
    `legal_exemption` needs `article`."""
    return await _answer(
        session, rights.reject(session, principal, request_id=request_id, data=body)
    )


@router.get(
    "/rights-requests/{request_id}/export",
    responses={
        200: {"content": {"application/json": {}, "text/csv": {}}},
        **problem_responses(401, 403, 404, 409, 422),
    },
)
async def export_rights_request(
    request_id: uuid.UUID,
    session: SessionDep,
    _: Reader,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    """The access report (JSON) or the portable data (JSON or CSV)."""
    media_type, content = await exports.export(session, request_id=request_id, fmt=format)
    if media_type == "application/json":
        return JSONResponse(content)
    return Response(
        content,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{request_id}.csv"'},
    )


@router.get(
    "/reports/rights-requests", response_model=RightsReport, responses=problem_responses(401, 403)
)
async def rights_requests_report(session: ReadSessionDep, _: ReportReader) -> RightsReport:
    """Counts by type and status, the overdue list and the median days to complete."""
    return await deadline_report.report(session)


@router.delete(
    "/subjects/{subject_id}/restriction",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 422),
)
async def lift_subject_restriction(
    subject_id: uuid.UUID, session: SessionDep, principal: SubjectWriter
) -> Response:
    """Lift a restriction of processing (Art 18); a recorded action."""
    await rights.lift_restriction(session, principal, subject_id=subject_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
