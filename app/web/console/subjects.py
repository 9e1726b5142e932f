"""A person's whole record in the console: the search, the subject's page, and its forms
(record a withdrawal or an opt-out, issue the preference link, merge a duplicate; a rights
request is taken down through app.web.console.rights). Each form posts to the service the
API route calls, with the API's own model."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.core.db import SessionDep
from app.core.pagination import Cursor
from app.models.catalogue import Purpose
from app.models.consent import ConsentEventCreate
from app.models.link import LinkCreate
from app.models.optout import OptOutCreate
from app.models.subject import SubjectMerge
from app.services.catalogue import entries as catalogue
from app.services.consent import events as consent
from app.services.optouts import records as optouts
from app.services.person import links as person_links
from app.services.subjects import merge as merging
from app.services.subjects import records, search, whole_record
from app.web.console.common import Posted, Viewer, attempt, reader, render, writer

router = APIRouter(include_in_schema=False)
Reader = Annotated[Viewer, Depends(reader("subjects:read"))]
ConsentWriter = Annotated[Posted, Depends(writer("consent:write"))]
OptOutWriter = Annotated[Posted, Depends(writer("optouts:write"))]
LinkMaker = Annotated[Posted, Depends(writer("links:create"))]
Merger = Annotated[Posted, Depends(writer("subjects:write"))]


@router.get("/console/people")
async def console_people(
    session: SessionDep,
    viewer: Reader,
    q: Annotated[str | None, Query(max_length=254)] = None,
    cursor: Cursor = None,
) -> Response:
    """Search by e-mail (exact) or by the start of a name."""
    found = None
    if q and q.strip():
        find = search.find_people  # guard: allow-subject-read (the team answering a person)
        found = await find(session, q, cursor=cursor)
    return render("people.html", viewer, q=q or "", found=found)


async def subject_page(
    session: SessionDep, viewer: Viewer, subject_id: uuid.UUID, status: int = 200, **extra: Any
) -> Response:
    record = await whole_record.whole_record(session, subject_id)
    purposes = await catalogue.descriptions(session, Purpose)
    return render("subject.html", viewer, status, purposes=purposes, **record, **extra)


@router.get("/console/people/{subject_id}")
async def console_person(
    subject_id: uuid.UUID,
    session: SessionDep,
    viewer: Reader,
    done: Annotated[str | None, Query(max_length=30)] = None,
) -> Response:
    return await subject_page(session, viewer, subject_id, done=done)


Outcome = tuple[Any, str | None, int]


async def _after(
    session: SessionDep, posted: Posted, subject_id: uuid.UUID, outcome: Outcome, done: str
) -> Response:
    """Done: back to the subject's page (PRG); refused: the page, saying why."""
    _, error, status = outcome
    if error is None:
        return RedirectResponse(f"/console/people/{subject_id}?done={done}", status_code=303)
    return await subject_page(session, posted.viewer, subject_id, status, error=error)


@router.post("/console/people/{subject_id}/withdraw")
async def console_withdraw(
    subject_id: uuid.UUID, session: SessionDep, posted: ConsentWriter
) -> Response:
    """A withdrawal the person made to the team (Art 7(3)), as `POST /v1/consent-events`."""

    async def withdraw() -> Any:
        body = {"subject_id": str(subject_id), "action": "withdrawn"}
        for name in ("purpose", "recipient", "method"):
            if (value := posted.one(name)) is not None:
                body[name] = value
        data = ConsentEventCreate.model_validate(body)
        return await consent.consent_payload(session, posted.viewer.principal, data=data)

    outcome = await attempt(session, withdraw)
    return await _after(session, posted, subject_id, outcome, "withdrawn")


@router.post("/console/people/{subject_id}/opt-out")
async def console_opt_out(
    subject_id: uuid.UUID, session: SessionDep, posted: OptOutWriter
) -> Response:
    """An opt-out of the person's address, as `POST /v1/opt-outs` (source: the CRM)."""

    async def opt_out() -> Any:
        subject = await records.get_subject(session, subject_id)
        data = OptOutCreate.model_validate(
            {
                "email": subject.email,
                "channel": posted.one("channel") or "all",
                "source": "crm",
                **({"reason": r} if (r := posted.one("reason")) else {}),
            }
        )
        return await optouts.record_optout(session, posted.viewer.principal, data=data)

    outcome = await attempt(session, opt_out)
    return await _after(session, posted, subject_id, outcome, "opted-out")


@router.post("/console/people/{subject_id}/links")
async def console_links(
    subject_id: uuid.UUID, request: Request, session: SessionDep, posted: LinkMaker
) -> Response:
    """The person's unsubscribe and preference links, shown to send them (API: links)."""
    settings = request.app.state.settings

    async def issue() -> Any:
        data = LinkCreate.model_validate({"purpose": p} if (p := posted.one("purpose")) else {})
        return await person_links.issue_links(
            session, posted.viewer.principal, subject_id=subject_id, data=data, settings=settings
        )

    links, error, status = await attempt(session, issue)
    return await subject_page(session, posted.viewer, subject_id, status, error=error, links=links)


@router.post("/console/people/{subject_id}/merge")
async def console_merge(subject_id: uuid.UUID, session: SessionDep, posted: Merger) -> Response:
    """Merge a duplicate into this person (`POST /v1/subjects/{id}/merge`)."""

    async def merge() -> Any:
        data = SubjectMerge.model_validate({"from": posted.one("from")})
        return await merging.merge(
            session, posted.viewer.principal, into=subject_id, from_id=data.from_
        )

    outcome = await attempt(session, merge)
    return await _after(session, posted, subject_id, outcome, "merged")
