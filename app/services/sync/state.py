"""The sync worker's database side: its position per target and the members each target
holds. Every function here runs inside the caller's transaction and never commits."""

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.base import utcnow
from app.models.sync import SyncState

LOAD = text("""
INSERT INTO sync_state (target, feed_after, initial_done, updated_at)
VALUES (:t, 0, false, now()) ON CONFLICT (target) DO NOTHING
""")


async def load(session: AsyncSession, target: str) -> SyncState:
    await session.execute(LOAD, {"t": target})
    row = (
        await session.execute(text("SELECT * FROM sync_state WHERE target = :t"), {"t": target})
    ).one()
    return SyncState.model_validate(row._mapping)


async def save(
    session: AsyncSession,
    target: str,
    *,
    feed_after: int | None = None,
    initial_done: bool | None = None,
    audience_after: uuid.UUID | None = None,
    clear_audience: bool = False,
    readback_since: datetime | None = None,
) -> None:
    """Advance what is given; leave the rest."""
    await session.execute(
        text(
            "UPDATE sync_state SET"
            " feed_after = coalesce(CAST(:f AS bigint), feed_after),"
            " initial_done = coalesce(CAST(:i AS boolean), initial_done),"
            " audience_after = CASE WHEN :clear THEN NULL"
            "   ELSE coalesce(CAST(:a AS uuid), audience_after) END,"
            " readback_since = coalesce(CAST(:r AS timestamptz), readback_since),"
            " updated_at = :now WHERE target = :t"
        ),
        {
            "t": target,
            "f": feed_after,
            "i": initial_done,
            "a": audience_after,
            "clear": clear_audience,
            "r": readback_since,
            "now": utcnow(),
        },
    )


async def reconciled(
    session: AsyncSession, target: str, *, at: datetime, summary: dict[str, Any]
) -> None:
    """The last reconciliation of a target's list: when, and its counts (`sync status`)."""
    await load(session, target)
    await session.execute(
        text(
            "UPDATE sync_state SET reconciled_at = :at, reconcile_summary = CAST(:s AS jsonb),"
            " updated_at = :now WHERE target = :t"
        ),
        {"t": target, "at": at, "s": json.dumps(summary), "now": utcnow()},
    )


async def members(
    session: AsyncSession, target: str, subject_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    rows = await session.execute(
        text(
            "SELECT subject_id, remote_id FROM sync_members"
            " WHERE target = :t AND subject_id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"t": target, "ids": list(subject_ids)},
    )
    return {r.subject_id: r.remote_id for r in rows}


Held = tuple[uuid.UUID, str, str]  # subject, remote id, remote status


async def remember(session: AsyncSession, target: str, held: Iterable[Held]) -> None:
    rows = list(held)
    if not rows:
        return
    await session.execute(
        text(
            "INSERT INTO sync_members (target, subject_id, remote_id, remote_status, synced_at)"
            " SELECT :t, s, r, st, now()"
            " FROM unnest(CAST(:s AS uuid[]), CAST(:r AS text[]), CAST(:st AS text[]))"
            "   AS v(s, r, st)"
            " ON CONFLICT (target, subject_id) DO UPDATE SET remote_id = EXCLUDED.remote_id,"
            " remote_status = EXCLUDED.remote_status, synced_at = EXCLUDED.synced_at"
        ),
        {
            "t": target,
            "s": [h[0] for h in rows],
            "r": [h[1] for h in rows],
            "st": [h[2] for h in rows],
        },
    )


async def forget(session: AsyncSession, target: str, subject_ids: Iterable[uuid.UUID]) -> None:
    ids = list(subject_ids)
    if ids:
        await session.execute(
            text(
                "DELETE FROM sync_members WHERE target = :t"
                " AND subject_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"t": target, "ids": ids},
        )


async def forget_remote(session: AsyncSession, target: str, remote_ids: Iterable[str]) -> None:
    ids = list(remote_ids)
    if ids:
        await session.execute(
            text(
                "DELETE FROM sync_members WHERE target = :t"
                " AND remote_id = ANY(CAST(:ids AS text[]))"
            ),
            {"t": target, "ids": ids},
        )


async def record_batch(
    session: AsyncSession,
    target: str,
    *,
    pushed: Iterable[Held] = (),
    removed: Iterable[uuid.UUID] = (),
    **position: object,
) -> None:
    """After a batch's remote calls succeeded: what the target now holds, and the new
    position, in one transaction (a crash before it repeats the batch, nothing more)."""
    await remember(session, target, pushed)
    await forget(session, target, removed)
    await save(session, target, **position)  # type: ignore[arg-type]


async def positions(session: AsyncSession) -> list[SyncState]:
    """Every target's position (`consent-api sync status`)."""
    rows = await session.execute(text("SELECT * FROM sync_state ORDER BY target"))
    return [SyncState.model_validate(r._mapping) for r in rows]
