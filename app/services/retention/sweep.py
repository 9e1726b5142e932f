"""The retention sweep (§7): report what is due (dry run) or erase it, in batches.

A dry run reads and changes nothing. A real run is a batch job, so unlike request-scoped
services it owns its transactions: one per batch, each re-checking its subjects under row
locks (a rights request opened meanwhile still holds a subject back), erasing them with the
rights-request erasure code, and appending a progress entry to the audit log. Stopped
half-way, a run has lost nothing: the next run finds only what is still due (resumable).
"""

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.auth import Principal
from app.core.db import unit_of_work
from app.models.base import utcnow
from app.models.retention import SweepItem, SweepReport
from app.services.audit import entries as audit
from app.services.changes import feed as changes
from app.services.retention.due import find_due
from app.services.retention.rules import grace_days as configured_grace
from app.services.rights import erasure
from app.services.subjects import records as subjects

Progress = Callable[[int], None]


def _item(row: Any) -> dict[str, Any]:
    return {
        "subject_id": str(row.subject_id),  # asyncpg's own UUID type: a plain string
        "category": row.category,
        "rule": row.rule,
        "due_at": row.due_at,
        "held_back": list(row.held_back),
    }


async def dry_run(
    session: AsyncSession, *, now: datetime | None = None, grace_days: int | None = None
) -> dict[str, Any]:
    """Every due subject with its rule and due date, and why any is held back; no writes.
    A plain dict (not a model): a sweep can list 100,000 subjects."""
    now = now or utcnow()
    grace = configured_grace() if grace_days is None else grace_days
    items = [_item(r) for r in await find_due(session, now=now, grace_days=grace)]
    held = sum(1 for i in items if i["held_back"])
    return {
        "sweep_id": None,
        "dry_run": True,
        "as_of": now,
        "grace_days": grace,
        "due": len(items),
        "erased": 0,
        "held_back": held,
        "items": items,
    }


async def _erase_batch(
    session: AsyncSession,
    principal: Principal,
    ids: list[uuid.UUID],
    *,
    now: datetime,
    grace: int,
) -> tuple[list[uuid.UUID], list[Any]]:
    """Lock, re-check and erase one batch; (erased ids, rows now held back)."""
    for subject_id in sorted(ids):  # a fixed lock order: two sweeps cannot deadlock
        await subjects.lock_subject(session, subject_id)
    rows = await find_due(session, now=now, grace_days=grace, among=ids)
    erased: list[uuid.UUID] = []
    for row in rows:
        if row.held_back:
            continue
        subject = await subjects.lock_subject(session, row.subject_id)
        email_hash = subject.email_hash
        outcome = await erasure.erase_subject(session, principal, subject)
        if outcome.get("erased"):
            await changes.append(
                session, "subject.erased", subject_id=row.subject_id, email_hash=email_hash
            )
            erased.append(row.subject_id)
    return erased, [r for r in rows if r.held_back]


async def _erase_in_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    todo: list[uuid.UUID],
    *,
    sweep_id: uuid.UUID,
    now: datetime,
    grace: int,
    batch_size: int,
    progress: Progress | None,
) -> tuple[set[uuid.UUID], dict[uuid.UUID, Any]]:
    """One transaction and one progress audit entry per batch; (erased ids, rows now held back)."""
    erased: set[uuid.UUID] = set()
    held: dict[uuid.UUID, Any] = {}
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        async with unit_of_work(sessionmaker) as session:
            done, newly_held = await _erase_batch(session, principal, batch, now=now, grace=grace)
            await audit.record(
                session,
                principal,
                "retention.sweep.batch",
                "retention_sweep",
                sweep_id,
                erased=len(done),
                held_back=len(newly_held),
            )
        erased.update(done)
        held.update({r.subject_id: r for r in newly_held})
        if progress:
            progress(len(batch))
    return erased, held


def _report_items(
    found: list[Any], erased: set[uuid.UUID], held: dict[uuid.UUID, Any]
) -> list[SweepItem]:
    """The subjects erased or held back, each held one with its reasons as last re-checked."""
    items = [
        SweepItem.model_validate(_item(r))
        for r in found
        if r.subject_id in erased or r.subject_id in held
    ]
    for item in items:
        if item.subject_id in held:
            item.held_back = list(held[item.subject_id].held_back)
    return items


async def run(
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    *,
    now: datetime | None = None,
    grace_days: int | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> SweepReport:
    """Erase every due subject that nothing holds back, `batch_size` per transaction."""
    now = now or utcnow()
    grace = configured_grace() if grace_days is None else grace_days
    sweep_id = uuid.uuid4()
    async with sessionmaker() as session:
        found = await find_due(session, now=now, grace_days=grace)
    todo = [r.subject_id for r in found if not r.held_back]
    held = {r.subject_id: r for r in found if r.held_back}
    if on_total:
        on_total(len(todo))
    erased, newly_held = await _erase_in_batches(
        sessionmaker,
        principal,
        todo,
        sweep_id=sweep_id,
        now=now,
        grace=grace,
        batch_size=batch_size,
        progress=progress,
    )
    held.update(newly_held)
    return await _record_and_report(
        sessionmaker, principal, sweep_id, found, erased, held, now=now, grace=grace
    )


async def _record_and_report(
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    sweep_id: uuid.UUID,
    found: list[Any],
    erased: set[uuid.UUID],
    held: dict[uuid.UUID, Any],
    *,
    now: datetime,
    grace: int,
) -> SweepReport:
    """The run's closing audit entry, in its own transaction, and the report returned."""
    items = _report_items(found, erased, held)
    async with unit_of_work(sessionmaker) as session:
        await audit.record(
            session,
            principal,
            "retention.sweep",
            "retention_sweep",
            sweep_id,
            as_of=now.isoformat(),
            grace_days=grace,
            due=len(found),
            erased=len(erased),
            held_back=len(held),
            held_back_reasons=_reason_counts(held.values()),
        )
    return SweepReport(
        sweep_id=sweep_id,
        dry_run=False,
        as_of=now,
        grace_days=grace,
        due=len(found),
        erased=len(erased),
        held_back=len(held),
        items=items,
    )


def _reason_counts(rows: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        for reason in row.held_back:
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))
