"""The change feed: a monotonically increasing sequence of what sync clients must propagate."""

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.change import ChangePage, ChangePublic

APPEND = text(
    "INSERT INTO changes (kind, subject_id, email_hash, purpose, at)"
    " VALUES (:kind, :subject_id, :email_hash, :purpose, now())"
)
# Only rows whose transaction is older than every transaction still running: a lower seq
# committed late is never skipped by a reader that already moved past it.
READ = text(
    "SELECT seq, kind, subject_id, email_hash, purpose, at FROM changes"
    " WHERE seq > :after"
    "   AND (txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    "        OR txid = pg_current_xact_id_if_assigned()::text::bigint)"
    " ORDER BY seq LIMIT :limit"
)


async def append(
    session: AsyncSession,
    kind: str,
    *,
    subject_id: uuid.UUID | None,
    email_hash: str | None,
    purpose: str | None = None,
) -> None:
    await session.execute(
        APPEND,
        {"kind": kind, "subject_id": subject_id, "email_hash": email_hash, "purpose": purpose},
    )


async def read(session: AsyncSession, *, after: int, limit: int) -> ChangePage:
    rows = (await session.execute(READ, {"after": after, "limit": limit})).all()
    items = [ChangePublic.model_validate(r._mapping) for r in rows]
    return ChangePage(items=items, next_after=items[-1].seq if items else after)
