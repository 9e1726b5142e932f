"""The audit entry of a statement that stores many decisions (a batch, an audience chunk, a
push by ids): one entry for the statement, not one per decision row.

Its digest holds the count of the rows, their first and last id and a SHA-256 over their
canonical bytes in id order. A statement's decision ids share one time-ordered prefix and
differ in their last four bytes only (`STATEMENT_IDS`), so the range first..last holds its
own rows and no other statement's: verification reads the range back and recomputes the
count and the SHA-256, and an edited, deleted or inserted row in it no longer matches.

The canonical bytes are written once, here, as SQL: the statement that stores the rows and
the verification that reads them back run the same expression. Changing it would break
every entry sealed before: a new form gets a new action instead.
"""

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

ACTION = "decision.statement"
# Where the form starts (migration 0025): an entry of this form with a smaller id was not
# written by the service.
MARKER = text("SELECT from_entry_id FROM audit_forms WHERE form = :f")

# A decision id of a statement: the statement's one time-ordered UUID (`{base}`, as bytes)
# with the candidate's ordinal in its last four bytes. The version and variant bits are in
# bytes 7 and 9, untouched, so the ids stay UUID version 7 and keep appending to the index.
STATEMENT_IDS = (
    "encode(overlay({base} PLACING int4send(CAST({ord} AS integer)) FROM 13), 'hex')::uuid"
)

# One decision row as text: a JSON array of every column in the table's order, the time in
# UTC to the microsecond (independent of the session's TimeZone and DateStyle), rendered by
# jsonb (one spelling for a value). `{d}` names the row.
DECISION_CANONICAL = """jsonb_build_array({d}.id,
  to_char({d}.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
  {d}.requester_key_id, {d}.requester_name, {d}.requester_role, {d}.subject_id, {d}.purpose,
  {d}.recipient, {d}.allowed, {d}.basis, {d}.reasons)::text"""
# The SHA-256 (hex) over the rows' canonical texts, each ending in a newline, in id order.
ROWS_SHA256 = (
    "encode(sha256(convert_to(string_agg("
    + DECISION_CANONICAL.format(d="{d}")
    + " || E'\\n', '' ORDER BY {d}.id), 'UTF8')), 'hex')"
)
# uuid has no min/max aggregate before PostgreSQL 18: its text in the "C" collation sorts
# as its bytes do.
FIRST = 'min(CAST(d.id AS text) COLLATE "C")'
LAST = 'max(CAST(d.id AS text) COLLATE "C")'


def entry_select(stored: str) -> str:
    """The SELECT of the statement's entry over `stored` (the INSERT's RETURNING of every
    decision column); no entry when it stored nothing. Parameters: the gate's :key_id,
    :key_name, :key_role, :purpose, :recipient, :now."""
    return f"""SELECT :key_id, :key_name, :key_role, '{ACTION}', 'decision', NULL,
  jsonb_build_object('count', count(*), 'allowed', count(*) FILTER (WHERE d.allowed),
    'first', {FIRST}, 'last', {LAST},
    'sha256', {ROWS_SHA256.format(d="d")},
    'purpose', CAST(:purpose AS text), 'recipient', CAST(:recipient AS text),
    'decided_at', to_char(CAST(:now AS timestamptz) AT TIME ZONE 'UTC',
                          'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
FROM {stored} d HAVING count(*) > 0"""  # noqa: S608 - constant SQL


# The rows in each entry's range, read back: their count and SHA-256 (NULL for none).
RECOMPUTE = text(f"""
SELECT r.entry_id, count(d.id) AS n, {ROWS_SHA256.format(d="d")} AS sha256
FROM unnest(CAST(:entry_ids AS bigint[]), CAST(:firsts AS uuid[]), CAST(:lasts AS uuid[]))
  AS r(entry_id, lo, hi)
LEFT JOIN decisions d ON d.id BETWEEN r.lo AND r.hi
GROUP BY r.entry_id
""")  # noqa: S608 - constant SQL
ARCHIVED_MONTHS = text("SELECT month FROM partition_archives WHERE parent = 'decisions'")


@dataclass
class Digests:
    """What verification needs to check statement entries: where the form starts and which
    months of decisions were exported and detached (their rows cannot be read back)."""

    from_entry_id: int | None
    archived: set[date]


async def load(session: AsyncSession) -> Digests:
    marker = (await session.execute(MARKER, {"f": ACTION})).scalar_one_or_none()
    months = {r[0] for r in await session.execute(ARCHIVED_MONTHS)}
    return Digests(marker, months)


def is_statement(row: Any) -> bool:
    return row.action == ACTION


async def mismatched(session: AsyncSession, rows: list[Any], digests: Digests) -> set[int]:
    """The ids of the statement entries among `rows` whose decision rows no longer match
    their digest (or that claim the form before it began)."""
    entries, bad = [], set()
    for r in rows:
        if not is_statement(r):
            continue
        bounds = _bounds(r.digest)
        if bounds is None or digests.from_entry_id is None or r.id < digests.from_entry_id:
            bad.add(r.id)
        else:
            entries.append((r, *bounds))
    if not entries:
        return bad
    found = await session.execute(
        RECOMPUTE,
        {
            "entry_ids": [r.id for r, _, _ in entries],
            "firsts": [lo for _, lo, _ in entries],
            "lasts": [hi for _, _, hi in entries],
        },
    )
    actual = {r.entry_id: (r.n, r.sha256) for r in found}
    for r, _, _ in entries:
        n, sha = actual.get(r.id, (0, None))
        if n == 0 and _archived(r.digest, digests.archived):
            continue  # its month of decisions was exported and detached
        if n != r.digest.get("count") or sha != r.digest.get("sha256"):
            bad.add(r.id)
    return bad


def _bounds(digest: Any) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The entry's first and last decision id (None: not there, or not ids)."""
    try:
        return uuid.UUID(digest["first"]), uuid.UUID(digest["last"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _archived(digest: dict[str, Any], months: set[date]) -> bool:
    at = str(digest.get("decided_at", ""))
    try:
        month = date(int(at[0:4]), int(at[5:7]), 1)
    except ValueError:
        return False
    return month in months
