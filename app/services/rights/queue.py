"""The privacy team's work queue (the console's rights requests): due first, with counts of
the open requests by state.

Open requests are read through `ix_rights_requests_open_due` (migration 0028), a partial
index on (due date, id) holding the status, the pause and the type: the list pages by
keyset on (due date, id) and the counts are one GROUP BY over that index, never a count
of every request ever received. Closed requests (one status at a time) are read through
`ix_rights_requests_status_due`. What is overdue or paused is decided where the API
decides it (app.services.rights.requests).
"""

import uuid
from datetime import date
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.errors import Unprocessable
from app.core.pagination import Page, decode_cursor, encode_cursor, page_of
from app.models.rights import OPEN_STATUSES, RightsRequest, RightsRequestPublic
from app.models.text import normalise_email
from app.services.rights.deadlines import today_uk
from app.services.rights.requests import _histories, to_public
from app.services.subjects.records import linked_ids, live_by_emails

OPEN = "open"  # the queue's default: both open statuses


async def person_filter(session: AsyncSession, person: str) -> Any:
    """The WHERE clause for "this person's requests": a subject id (with the subjects merged
    into it), or an e-mail (the live subject holding it, and requests from that address
    made before anyone matched it to a subject)."""
    text = person.strip()
    try:
        return col(RightsRequest.subject_id).in_(await linked_ids(session, uuid.UUID(text)))
    except ValueError:
        pass
    email = normalise_email(text)
    found = (await live_by_emails(session, [email])).get(email)
    by_address = col(RightsRequest.email) == email
    if found is None:
        return by_address
    return or_(
        col(RightsRequest.subject_id).in_(await linked_ids(session, found["id"])), by_address
    )


def _after(cursor: str | None) -> Any:
    values = decode_cursor(cursor, 2)
    if values is None:
        return None
    try:
        due, last = date.fromisoformat(values[0]), uuid.UUID(values[1])
    except (TypeError, ValueError, AttributeError) as exc:
        raise Unprocessable("The cursor is not valid.") from exc
    return or_(
        col(RightsRequest.due_at) > due,
        and_(col(RightsRequest.due_at) == due, col(RightsRequest.id) > last),
    )


async def due_first(
    session: AsyncSession,
    *,
    status: str = OPEN,
    type_: str | None = None,
    person: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[RightsRequestPublic]:
    """A page of requests, soonest due first, each with its history (overdue and paused
    marked by `to_public`, as the API marks them)."""
    wanted = OPEN_STATUSES if status == OPEN else (status,)
    stmt = (
        select(RightsRequest)
        .where(col(RightsRequest.status).in_(wanted))
        .order_by(col(RightsRequest.due_at), col(RightsRequest.id))
    )
    if type_ is not None:
        stmt = stmt.where(col(RightsRequest.type) == type_)
    if person:
        stmt = stmt.where(await person_filter(session, person))
    after = _after(cursor)
    if after is not None:
        stmt = stmt.where(after)
    rows = list((await session.execute(stmt.limit(limit + 1))).scalars())
    histories = await _histories(session, [r.id for r in rows[:limit]])
    return page_of(
        rows,
        limit,
        lambda r: encode_cursor([r.due_at.isoformat(), str(r.id)]),
        lambda r: to_public(r, histories[r.id]),
    )


async def open_counts(session: AsyncSession) -> dict[str, int]:
    """Open requests by state: received, identity verified, paused, overdue, and all open.
    One GROUP BY over the open requests' partial index."""
    paused = col(RightsRequest.paused_since).is_not(None)
    overdue = and_(~paused, col(RightsRequest.due_at) < today_uk())
    state = case((paused, "paused"), (overdue, "overdue"), else_="running")
    stmt = (
        select(col(RightsRequest.status), state.label("state"), func.count())
        .where(col(RightsRequest.status).in_(OPEN_STATUSES))
        .group_by(col(RightsRequest.status), state)
    )
    counts = {"received": 0, "identity_verified": 0, "paused": 0, "overdue": 0, "open": 0}
    for status, how, n in await session.execute(stmt):
        counts[status] += n
        counts["open"] += n
        if how != "running":
            counts[how] += n
    return counts
