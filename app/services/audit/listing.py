"""Reading the accountability records: audit entries, checkpoints, decisions."""

import uuid
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.errors import Unprocessable
from app.core.pagination import (
    Page,
    decode_cursor,
    decode_time_cursor,
    encode_cursor,
    encode_time_cursor,
    page_of,
)
from app.models.audit import (
    AuditCheckpoint,
    AuditCheckpointPublic,
    AuditEntry,
    AuditEntryPublic,
)
from app.models.decision import Decision, DecisionPublic


def _int_cursor(decoded: list[Any]) -> int:
    value = decoded[0]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise Unprocessable("The cursor is not valid.")
    return value


async def list_events(
    session: AsyncSession, *, after: int, limit: int, cursor: str | None
) -> Page[AuditEntryPublic]:
    decoded = decode_cursor(cursor, 1)
    start = _int_cursor(decoded) if decoded else after
    stmt = (
        select(AuditEntry)
        .where(col(AuditEntry.id) > start)
        .order_by(col(AuditEntry.id))
        .limit(limit + 1)
    )
    rows = list((await session.execute(stmt)).scalars())
    return page_of(rows, limit, lambda r: encode_cursor([r.id]), AuditEntryPublic.model_validate)


async def list_checkpoints(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> Page[AuditCheckpointPublic]:
    decoded = decode_cursor(cursor, 1)
    stmt = select(AuditCheckpoint).order_by(col(AuditCheckpoint.position)).limit(limit + 1)
    if decoded:
        stmt = stmt.where(col(AuditCheckpoint.position) > _int_cursor(decoded))
    rows = list((await session.execute(stmt)).scalars())
    return page_of(
        rows, limit, lambda r: encode_cursor([r.position]), AuditCheckpointPublic.model_validate
    )


async def list_decisions(
    session: AsyncSession,
    *,
    subject_id: uuid.UUID | None,
    purpose: str | None,
    limit: int,
    cursor: str | None,
) -> Page[DecisionPublic]:
    stmt = (
        select(Decision)
        .order_by(col(Decision.decided_at).desc(), col(Decision.id).desc())
        .limit(limit + 1)
    )
    if subject_id is not None:
        stmt = stmt.where(col(Decision.subject_id) == subject_id)
    if purpose is not None:
        stmt = stmt.where(col(Decision.purpose) == purpose)
    decoded = decode_time_cursor(cursor)
    if decoded:
        at, last = decoded
        stmt = stmt.where(
            or_(
                col(Decision.decided_at) < at,
                and_(col(Decision.decided_at) == at, col(Decision.id) < last),
            )
        )
    rows = list((await session.execute(stmt)).scalars())
    return page_of(
        rows, limit, lambda r: encode_time_cursor(r.decided_at, r.id), DecisionPublic.model_validate
    )
