"""Stop the clock on a rights request (ICO guidance on Art 12(3)).

While the controller waits for the person (proof of identity, clarification, a fee), the
request is paused: it is not overdue, and on resume its due date moves by the paused
calendar days and then to the next working day (app.services.rights.deadlines). A request may be
paused again after a resume; only an open request whose due date has not passed can be
paused. Each pause and resume is a request event and an audit entry; the free-text note is
kept only in the event's private part, which erasure removes.
"""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.errors import Conflict
from app.models.base import utcnow
from app.models.rights import OPEN_STATUSES, Pause, RightsRequest
from app.services.rights.deadlines import today_uk
from app.services.rights.requests import _event, _locked, _require, end_pause


async def pause(
    session: AsyncSession, principal: Principal, *, request_id: uuid.UUID, data: Pause
) -> RightsRequest:
    req = await _locked(session, request_id)
    _require(req, OPEN_STATUSES, "paused")
    if req.paused_since is not None:
        raise Conflict("The request is already paused.", paused_since=req.paused_since.isoformat())
    if today_uk() > req.due_at:
        raise Conflict("The due date has passed; the clock can only be stopped before it.")
    req.paused_since, req.pause_reason = utcnow(), data.reason
    req.updated_at = req.paused_since
    await session.flush()
    detail: dict[str, dict[str, str]] = {"public": {"reason": data.reason}}
    if data.note:
        detail["private"] = {"note": data.note}
    await _event(session, principal, req, "paused", detail)
    return req


async def resume(
    session: AsyncSession, principal: Principal, *, request_id: uuid.UUID
) -> RightsRequest:
    req = await _locked(session, request_id)
    if req.paused_since is None:
        raise Conflict("The request is not paused.", status_now=req.status)
    reason = req.pause_reason
    days = end_pause(req)
    req.updated_at = utcnow()
    await session.flush()
    public = {"reason": reason, "days": days, "due_at": str(req.due_at)}
    await _event(session, principal, req, "resumed", {"public": public})
    return req
