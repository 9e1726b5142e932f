"""Rights requests: lifecycle, deadlines, listing and the report (§10, Art 12-22).

received -> identity_verified -> completed | rejected; `extended` is a flag set once, before
the due date. Every transition appends an event and an audit entry; completing performs
the request (app.services.rights.fulfilment) in the same transaction.
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.auth import Principal
from app.core.crypto import newest_key
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.pagination import Page, decode_time_cursor, encode_time_cursor, page_of
from app.models.base import utcnow
from app.models.rights import (
    OPEN_STATUSES,
    Complete,
    Extend,
    Reject,
    RightsRequest,
    RightsRequestCreate,
    RightsRequestEvent,
    RightsRequestPublic,
    VerifyIdentity,
)
from app.models.subject import Subject
from app.services.audit import entries as audit
from app.services.changes import feed as changes
from app.services.rights import fulfilment
from app.services.rights.deadlines import days_paused, due_date, today_uk
from app.services.subjects.records import linked_ids, refuse_merged

CLOCK_SKEW = timedelta(minutes=5)


def to_public(
    req: RightsRequest, events: list[RightsRequestEvent] | None = None
) -> RightsRequestPublic:
    outcome = (req.result or {}).get("outcome")
    history = [
        {
            "action": e.action,
            "actor": e.actor,
            "at": e.at.isoformat(),
            **({"detail": e.detail.get("public")} if e.detail and e.detail.get("public") else {}),
        }
        for e in events or []
    ]
    paused = req.paused_since is not None
    overdue = req.status in OPEN_STATUSES and not paused and req.due_at < today_uk()
    return RightsRequestPublic.model_validate(
        {
            **req.model_dump(),
            "overdue": overdue,
            "outcome": outcome,
            "history": history,
            "paused": paused,
        }
    )


def end_pause(req: RightsRequest) -> int:
    """Restart a stopped clock: the paused calendar days move the due date (0 if running)."""
    if req.paused_since is None:
        return 0
    days = days_paused(req.paused_since, utcnow())
    req.paused_days += days
    req.due_at = due_date(req.received_at, req.extended_months, req.paused_days)
    req.paused_since, req.pause_reason = None, None
    return days


async def _event(
    session: AsyncSession,
    principal: Principal,
    req: RightsRequest,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(RightsRequestEvent).values(
            request_id=req.id, action=action, actor=principal.name, at=utcnow(), detail=detail
        )
    )
    public = (detail or {}).get("public") or {}
    await audit.record(
        session,
        principal,
        f"rights_request.{action}",
        "rights_request",
        req.id,
        type=req.type,
        status=req.status,
        **public,
    )


def _received_at(data: RightsRequestCreate, now: datetime) -> datetime:
    received_at = data.received_at or now
    if received_at > now + CLOCK_SKEW:
        raise Unprocessable(
            "`received_at` is in the future: give when the request arrived (any past date).",
            field="received_at",
        )
    return received_at


async def _requester(
    session: AsyncSession, data: RightsRequestCreate
) -> tuple[uuid.UUID | None, str | None, int]:
    """(subject id or None, e-mail hash, its key's id) of the person the request is about."""
    if data.subject_id is not None:
        subject = await session.get(Subject, data.subject_id)
        if subject is None:
            raise NotFound("No subject with this id.")
        refuse_merged(subject)
        return data.subject_id, subject.email_hash, subject.email_hash_key
    assert data.email is not None
    key = newest_key()
    hashed = key.hash(data.email)
    # An e-mail we do not know is still a valid request: the answer may be "nothing held".
    subject_id = (
        await session.execute(
            select(col(Subject.id)).where(
                col(Subject.email) == data.email, col(Subject.erased_at).is_(None)
            )
        )
    ).scalar_one_or_none()
    return subject_id, hashed, key.id


async def create_request(
    session: AsyncSession, principal: Principal, *, data: RightsRequestCreate
) -> RightsRequest:
    now = utcnow()
    received_at = _received_at(data, now)
    subject_id, hashed, hash_key = await _requester(session, data)
    req = RightsRequest(
        id=uuid.uuid4(),
        type=data.type,
        subject_id=subject_id,
        email=data.email,
        email_hash=hashed,
        email_hash_key=hash_key,
        details=data.details,
        status="received",
        received_at=received_at,
        due_at=due_date(received_at),
        created_by=principal.name,
        updated_at=now,
    )
    session.add(req)
    await session.flush()
    await _event(session, principal, req, "received", {"public": {"due_at": str(req.due_at)}})
    return req


async def get_request(session: AsyncSession, request_id: uuid.UUID) -> RightsRequest:
    req = await session.get(RightsRequest, request_id)
    if req is None:
        raise NotFound("No rights request with this id.")
    return req


async def _histories(
    session: AsyncSession, request_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[RightsRequestEvent]]:
    """Each request's events in the order they happened (one statement for a whole page)."""
    found: dict[uuid.UUID, list[RightsRequestEvent]] = {i: [] for i in request_ids}
    if not request_ids:
        return found
    stmt = (
        select(RightsRequestEvent)
        .where(col(RightsRequestEvent.request_id).in_(request_ids))
        .order_by(col(RightsRequestEvent.id))
    )
    for event in (await session.execute(stmt)).scalars():
        found[event.request_id].append(event)
    return found


async def get_with_history(session: AsyncSession, request_id: uuid.UUID) -> RightsRequestPublic:
    """The request as every answer about it shows it (API.md): GET, create and each action.
    Read from the database even when this session holds the row (an action's answer), so
    an answer and a later GET say the same to the microsecond."""
    req = await session.get(RightsRequest, request_id, populate_existing=True)
    if req is None:
        raise NotFound("No rights request with this id.")
    return to_public(req, (await _histories(session, [request_id]))[request_id])


def _require(req: RightsRequest, allowed: tuple[str, ...], action: str) -> None:
    if req.status not in allowed:
        raise Conflict(f"A `{req.status}` request cannot be {action}.", status_now=req.status)


async def _locked(session: AsyncSession, request_id: uuid.UUID) -> RightsRequest:
    """The request row, locked: two transitions of one request never interleave."""
    req = (
        await session.execute(
            select(RightsRequest).where(col(RightsRequest.id) == request_id).with_for_update()
        )
    ).scalar_one_or_none()
    if req is None:
        raise NotFound("No rights request with this id.")
    return req


async def verify_identity(
    session: AsyncSession, principal: Principal, *, request_id: uuid.UUID, data: VerifyIdentity
) -> RightsRequest:
    req = await _locked(session, request_id)
    _require(req, ("received",), "verified")
    req.status, req.identity_method, req.identity_note = "identity_verified", data.method, data.note
    req.updated_at = utcnow()
    await session.flush()
    await _event(session, principal, req, "identity_verified", {"public": {"method": data.method}})
    return req


async def extend(
    session: AsyncSession, principal: Principal, *, request_id: uuid.UUID, data: Extend
) -> RightsRequest:
    req = await _locked(session, request_id)
    _require(req, OPEN_STATUSES, "extended")
    if req.extended_months:
        raise Conflict("The request was already extended; Art 12(3) allows it once.")
    if today_uk() > req.due_at:
        raise Conflict("The due date has passed; an extension must come before it.")
    req.extended_months, req.extension_reason = data.months, data.reason
    req.due_at = due_date(req.received_at, data.months, req.paused_days)
    req.updated_at = utcnow()
    await session.flush()
    await _event(
        session,
        principal,
        req,
        "extended",
        {"public": {"months": data.months, "due_at": str(req.due_at)}},
    )
    return req


async def complete(
    session: AsyncSession, principal: Principal, *, request_id: uuid.UUID, data: Complete
) -> RightsRequest:
    """Perform the request, then mark it completed, in one transaction."""
    req = await _locked(session, request_id)
    _require(req, ("identity_verified",), "completed (identity must be verified first)")
    result, private = await fulfilment.perform(session, principal, req, data)
    end_pause(req)  # answering ends any wait
    req.status, req.completed_at, req.updated_at = "completed", utcnow(), utcnow()
    req.purposes = data.purposes
    req.result = to_jsonable_python(result)
    await session.flush()
    await _event(
        session,
        principal,
        req,
        "completed",
        to_jsonable_python(
            {"public": result.get("outcome"), **({"private": private} if private else {})}
        ),
    )
    return req


async def reject(
    session: AsyncSession, principal: Principal, *, request_id: uuid.UUID, data: Reject
) -> RightsRequest:
    req = await _locked(session, request_id)
    _require(req, OPEN_STATUSES, "rejected")
    end_pause(req)
    req.status, req.rejection_code = "rejected", data.code
    req.rejection_article, req.rejection_reason = data.article, data.reason
    req.completed_at = req.updated_at = utcnow()
    await session.flush()
    await _event(session, principal, req, "rejected", {"public": {"code": data.code}})
    return req


def overdue_conditions() -> tuple[Any, ...]:
    """Open, past due and not paused (a stopped clock is not overdue)."""
    return (
        col(RightsRequest.status).in_(OPEN_STATUSES),
        col(RightsRequest.paused_since).is_(None),
        col(RightsRequest.due_at) < today_uk(),
    )


async def list_requests(
    session: AsyncSession,
    *,
    status: str | None,
    type_: str | None,
    overdue: bool,
    limit: int,
    cursor: str | None,
    paused: bool | None = None,
    subject_id: uuid.UUID | None = None,
) -> Page[RightsRequestPublic]:
    """A page of requests, each with its history; the filters combine (AND). A subject's
    requests are found by ix_rights_requests_subject, then put in order (a handful)."""
    stmt = select(RightsRequest).order_by(col(RightsRequest.received_at), col(RightsRequest.id))
    if subject_id is not None:  # with the requests of every subject merged into it
        stmt = stmt.where(col(RightsRequest.subject_id).in_(await linked_ids(session, subject_id)))
    if status is not None:
        stmt = stmt.where(col(RightsRequest.status) == status)
    if type_ is not None:
        stmt = stmt.where(col(RightsRequest.type) == type_)
    if overdue:
        stmt = stmt.where(*overdue_conditions())
    if paused is not None:
        stmt = stmt.where(
            col(RightsRequest.paused_since).is_not(None)
            if paused
            else col(RightsRequest.paused_since).is_(None)
        )
    after = decode_time_cursor(cursor)
    if after is not None:
        at, last = after
        stmt = stmt.where(
            or_(
                col(RightsRequest.received_at) > at,
                and_(col(RightsRequest.received_at) == at, col(RightsRequest.id) > last),
            )
        )
    rows = list((await session.execute(stmt.limit(limit + 1))).scalars())
    histories = await _histories(session, [r.id for r in rows[:limit]])
    return page_of(
        rows,
        limit,
        lambda r: encode_time_cursor(r.received_at, r.id),
        lambda r: to_public(r, histories[r.id]),
    )


async def lift_restriction(
    session: AsyncSession, principal: Principal, *, subject_id: uuid.UUID
) -> None:
    """Lifting a restriction (Art 18(3)) is a recorded action of its own."""
    lifted = (
        await session.execute(
            update(Subject)
            .where(col(Subject.id) == subject_id, col(Subject.restricted).is_(True))
            .values(restricted=False, updated_at=utcnow())
            .returning(col(Subject.email_hash))
        )
    ).first()
    if lifted is None:
        raise NotFound("The subject is not restricted.")
    await changes.append(
        session, "subject.unrestricted", subject_id=subject_id, email_hash=lifted.email_hash
    )
    await audit.record(session, principal, "subject.unrestrict", "subject", subject_id)
