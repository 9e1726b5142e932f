"""Monthly partitions of `decisions` and `audit_entries`: keeping months ahead, listing,
and the retention job that exports a past month and detaches it.

"Exported" means: the partition's rows were written with COPY to a new file (fsynced, then
moved into place; never overwriting one), and the file's SHA-256 and row count, equal to the
partition's, were recorded in `partition_archives` in the same transaction as the detach.
A month is detached only when every audit entry in it is sealed and covered by a signed
checkpoint (its decisions go with it), so the chain before it is fixed for good.
"""

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

MAINTENANCE_LOCK = 7_310_553
MONTHS_AHEAD = 3
# parent table -> (partition key, order of rows in an export)
PARENTS = {"audit_entries": ("at", "position, id"), "decisions": ("decided_at", "decided_at, id")}
# Table names put into SQL here (noqa: S608) come from pg_catalog or are built from a date.
MONTH_NAME = re.compile(r"^(audit_entries|decisions)_(\d{4})_(\d{2})$")

ATTACHED = text("""
SELECT c.relname AS name, p.relname AS parent FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname IN ('audit_entries', 'decisions') ORDER BY c.relname
""")


class RetentionRefused(Exception):
    """The month may not be detached yet; the message says why and what to do."""


async def ensure_partitions(session: AsyncSession, months_ahead: int = MONTHS_AHEAD) -> int | None:
    """Create this month's and the next months' partitions; None if another worker is at it."""
    locked = await session.execute(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": MAINTENANCE_LOCK}
    )
    if not locked.scalar_one():
        return None
    created = await session.execute(
        text("SELECT consent_ensure_partitions(:n)"), {"n": months_ahead}
    )
    return int(created.scalar_one())


def month_of(name: str) -> date | None:
    match = MONTH_NAME.match(name)
    return date(int(match[2]), int(match[3]), 1) if match else None


@dataclass
class MonthPartition:
    parent: str
    name: str
    month: date | None  # None: the default partition
    rows: int
    unsealed: int


async def list_partitions(session: AsyncSession) -> list[MonthPartition]:
    out = []
    for row in (await session.execute(ATTACHED)).all():
        unsealed = (
            "count(*) FILTER (WHERE position IS NULL)" if row.parent == "audit_entries" else "0"
        )
        counts = (
            await session.execute(text(f'SELECT count(*), {unsealed} FROM "{row.name}"'))  # noqa: S608
        ).one()
        out.append(MonthPartition(row.parent, row.name, month_of(row.name), counts[0], counts[1]))
    return out


def _current_month() -> date:
    today = datetime.now(UTC).date()
    return today.replace(day=1)


async def _check_sealed(session: AsyncSession, name: str) -> tuple[int, int | None, int | None]:
    row = (
        await session.execute(
            text(
                f"SELECT count(*) AS n, count(*) FILTER (WHERE position IS NULL) AS unsealed,"  # noqa: S608
                f' min(position) AS first, max(position) AS last FROM "{name}"'
            )
        )
    ).one()
    if row.unsealed:
        raise RetentionRefused(
            f"{name} holds {row.unsealed} unsealed audit entries: let the sealer run"
            " (`consent-api serve`) and try again"
        )
    signed = (
        await session.execute(text("SELECT max(position) FROM audit_checkpoints"))
    ).scalar_one()
    if row.last is not None and (signed is None or signed < row.last):
        raise RetentionRefused(f"{name} is not yet covered by a signed checkpoint; try again")
    return row.n, row.first, row.last


async def _export(session: AsyncSession, name: str, order: str, path: Path, rows: int) -> str:
    if path.exists():  # noqa: ASYNC240
        raise RetentionRefused(f"{path} exists already: archives are never overwritten")
    partial = path.with_name(path.name + ".partial")
    raw: Any = (await (await session.connection()).get_raw_connection()).driver_connection
    status = await raw.copy_from_query(
        f'SELECT * FROM "{name}" ORDER BY {order}',  # noqa: S608
        output=str(partial),
        format="csv",
        header=True,
    )
    written = int(str(status).split()[-1])
    if written != rows:
        partial.unlink(missing_ok=True)
        raise RetentionRefused(f"{name}: exported {written} rows of {rows}; nothing detached")
    digest = hashlib.sha256()
    with partial.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        os.fsync(f.fileno())
    partial.chmod(0o600)
    partial.rename(path)
    return digest.hexdigest()


async def detach_month(
    session: AsyncSession, month: date, export_dir: Path, *, drop: bool = False
) -> list[dict[str, Any]]:
    """Export and detach `month` of both tables in the session's transaction, or refuse."""
    if month >= _current_month():
        raise RetentionRefused("only months before the current one can be detached")
    attached = {r.name: r.parent for r in (await session.execute(ATTACHED)).all()}
    names = [f"{parent}_{month:%Y_%m}" for parent in PARENTS]  # audit entries first
    names = [n for n in names if n in attached]
    for name in names:  # writers wait; the checks below hold until the detach commits
        await session.execute(text(f'LOCK TABLE "{name}" IN SHARE MODE'))
    audit_name = f"audit_entries_{month:%Y_%m}"
    sealed = await _check_sealed(session, audit_name) if audit_name in names else None
    archived = []
    for name in names:
        parent = attached[name]
        if parent == "audit_entries" and sealed is not None:
            rows, first, last = sealed
        else:
            rows = (await session.execute(text(f'SELECT count(*) FROM "{name}"'))).scalar_one()  # noqa: S608
            first = last = None
        path = export_dir / f"{name}.csv"
        sha = await _export(session, name, PARENTS[parent][1], path, rows)
        await session.execute(
            text(
                "INSERT INTO partition_archives (parent, partition, month, path, sha256, rows,"
                " first_position, last_position, archived_at)"
                " VALUES (:parent, :name, :month, :path, :sha, :rows, :first, :last, now())"
            ),
            {"parent": parent, "name": name, "month": month, "path": str(path.resolve()),
             "sha": sha, "rows": rows, "first": first, "last": last},
        )  # fmt: skip
        await session.execute(text(f'ALTER TABLE "{parent}" DETACH PARTITION "{name}"'))
        if drop:
            await session.execute(text(f'DROP TABLE "{name}"'))
        archived.append({"partition": name, "rows": rows, "path": str(path), "sha256": sha})
    return archived


async def months_before(session: AsyncSession, before: date) -> list[date]:
    months = {month_of(r.name) for r in (await session.execute(ATTACHED)).all()}
    return sorted(m for m in months if m is not None and m < before)


async def archived_positions(session: AsyncSession) -> list[tuple[int, int]]:
    """Position ranges of detached audit months, for verification to step over."""
    rows = await session.execute(
        text(
            "SELECT first_position, last_position FROM partition_archives"
            " WHERE parent = 'audit_entries' AND first_position IS NOT NULL"
            " ORDER BY first_position"
        )
    )
    return [(r[0], r[1]) for r in rows]
