"""The rights-request deadline report (`GET /v1/reports/rights-requests`): counts by type
and status, the overdue requests, the median days to complete and the clock's pauses."""

import statistics
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import utcnow
from app.models.rights import RightsReport, RightsRequest
from app.services.rights.deadlines import days_paused
from app.services.rights.requests import overdue_conditions


async def _counts_by(session: AsyncSession, column: Any) -> dict[str, int]:
    return dict(
        (await session.execute(select(col(column), func.count()).group_by(col(column)))).all()
    )


async def _overdue_rows(session: AsyncSession) -> list[dict[str, str]]:
    due_at = col(RightsRequest.due_at)
    stmt = select(col(RightsRequest.id), col(RightsRequest.type), col(RightsRequest.status), due_at)
    rows = (await session.execute(stmt.where(*overdue_conditions()).order_by(due_at))).all()
    return [
        {"id": str(r.id), "type": r.type, "status": r.status, "due_at": str(r.due_at)} for r in rows
    ]


async def _days_to_complete(session: AsyncSession) -> list[float]:
    took = col(RightsRequest.completed_at) - col(RightsRequest.received_at)
    stmt = select(func.extract("epoch", took)).where(col(RightsRequest.status) == "completed")
    return [float(d) / 86400 for d in (await session.execute(stmt)).scalars().all()]


async def _pauses(session: AsyncSession) -> tuple[int, int]:
    """(requests paused now, calendar days paused: ended pauses plus those still running)."""
    ended = select(func.coalesce(func.sum(col(RightsRequest.paused_days)), 0))
    ended_days = (await session.execute(ended)).scalar_one()
    paused_since = col(RightsRequest.paused_since)
    stmt = select(paused_since).where(paused_since.is_not(None))
    running = (await session.execute(stmt)).scalars().all()
    now = utcnow()
    running_days = sum(days_paused(since, now) for since in running if since is not None)
    return len(running), int(ended_days) + running_days


async def report(session: AsyncSession) -> RightsReport:
    by_type = await _counts_by(session, RightsRequest.type)
    by_status = await _counts_by(session, RightsRequest.status)
    overdue = await _overdue_rows(session)
    days = await _days_to_complete(session)
    paused, paused_days = await _pauses(session)
    return RightsReport(
        by_type=by_type,
        by_status=by_status,
        overdue=overdue,
        median_days_to_complete=round(statistics.median(days), 2) if days else None,
        completed=len(days),
        paused=paused,
        days_paused=paused_days,
    )
