"""Audiences: exactly the subjects the gate allows, built on the gate's own SQL predicate
(`decisions.REASONS_SQL`, over another set of candidates), each handed-out subject stored
as a decision in the same statement. Keyset chunks over subjects.id keep memory flat."""

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import current_settings
from app.core.driver import Conn, Database, Prepared, UnitOfWork, connection_of, prepare
from app.core.errors import Unprocessable
from app.core.pagination import decode_cursor, encode_cursor
from app.models.audience import AudienceMember, AudiencePage, GateResult
from app.models.base import utcnow
from app.services.gate.decisions import (
    GATE_CASTS,
    REASONS_SQL,
    STATEMENT_ID_CTE,
    STORE_MANY_CTES,
    _explain_empty,
    statement_id,
)

# The next live subjects after a keyset position, in id order: at most `scan` of them, or,
# given `upto`, every one up to and including it (`scan` NULL: no limit; the stream's ranges).
LIVE_AFTER = """s0.erased_at IS NULL
  AND (CAST(:after AS uuid) IS NULL OR s0.id > CAST(:after AS uuid))"""
SCAN_CANDIDATES = f"""
SELECT row_number() OVER (ORDER BY s0.id) AS ord, s0.id AS subject_id FROM subjects s0
WHERE {LIVE_AFTER} AND (CAST(:upto AS uuid) IS NULL OR s0.id <= CAST(:upto AS uuid))
ORDER BY s0.id LIMIT :scan
"""  # noqa: S608 - constant SQL
# The next range of at most `scan` live subjects after `after`: its last subject and how many
# it holds (0: none remain). An index walk over subjects' keys, so that the next chunk can
# start before this one is evaluated; every range is bounded, so a chunk stays at about
# `scan` members even while subjects are being added.
NEXT_RANGE = f"""
SELECT c.id AS upto, count(*) OVER () AS n
FROM (SELECT s0.id FROM subjects s0 WHERE {LIVE_AFTER} ORDER BY s0.id LIMIT :scan) c
ORDER BY c.id DESC LIMIT 1
"""  # noqa: S608 - constant SQL
CHUNK_END = prepare(NEXT_RANGE, scan="integer")
# Subjects named by id (the sync worker, at the moment of a push).
ID_CANDIDATES = """
SELECT r.ord, r.ref_id AS subject_id
FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS r(ref_id, ord)
"""

EVALUATE = """
WITH cand AS ({candidates}),
{statement_id_cte},
evaluated AS MATERIALIZED (
  SELECT {id} AS id, e.* FROM ({reasons}) e CROSS JOIN stmt
),
chosen AS MATERIALIZED (
  SELECT * FROM evaluated WHERE cardinality(reasons) = 0 ORDER BY ord LIMIT :take
),
{store}
SELECT e.subject_id, ch.id IS NOT NULL AS chosen, {columns}
FROM evaluated e LEFT JOIN chosen ch ON ch.id = e.id
LEFT JOIN subjects s ON s.id = e.subject_id
ORDER BY e.ord
"""
# What is handed out of a subject chosen (NULL for the others): the member's fields...
MEMBER_COLUMNS = """CASE WHEN ch.id IS NOT NULL THEN s.email END AS email,
       CASE WHEN ch.id IS NOT NULL THEN s.name END AS name,
       CASE WHEN ch.id IS NOT NULL THEN s.company END AS company"""
# ... or, for the NDJSON stream, the member's line as PostgreSQL writes it: the worker then
# only joins lines (a model and an encoding per member were a third of its time per row).
# The same four fields in the same order; a newline in a value is escaped, as in any JSON.
LINE_COLUMNS = """CASE WHEN ch.id IS NOT NULL THEN json_build_object(
         'subject_id', e.subject_id, 'email', s.email, 'name', s.name, 'company', s.company
       )::text END AS line"""


def _evaluate(candidates: str, recorded: str, columns: str) -> Prepared:
    # An audience stores the decisions it hands out; a push by ids stores every one, like a
    # batch; either with one audit entry for the chunk. All run on the driver connection
    # (app.core.driver): one round trip per chunk.
    sql = EVALUATE.format(
        candidates=candidates,
        statement_id_cte=STATEMENT_ID_CTE,
        id=statement_id("e.ord"),
        reasons=REASONS_SQL,
        store=STORE_MANY_CTES.format(recorded=recorded),
        columns=columns,
    )
    return prepare(sql, **GATE_CASTS)


SCAN = _evaluate(SCAN_CANDIDATES, "chosen", MEMBER_COLUMNS)
SCAN_LINES = _evaluate(SCAN_CANDIDATES, "chosen", LINE_COLUMNS)
# A push by ids also answers why a subject is denied, its MailChimp key, and its keyed
# hash (for logs).
BY_IDS = _evaluate(
    ID_CANDIDATES,
    "evaluated",
    f"e.reasons, {MEMBER_COLUMNS}, md5(s.email) AS email_md5, s.email_hash",
)
MIN_SCAN = 500

# A chunk is planned for its own parameters. The generic plan the hot paths share
# (plan_cache_mode=force_generic_plan) guesses that a third of `subjects` follows the keyset
# position and a tenth of that survives `LIMIT :scan`, so it hash-joined all of `subjects`,
# twice per chunk, for 1,000 candidates: two thirds of the chunk's time. Planned with the
# chunk's real size, and index probes on cached pages priced near a sequential read (1.1,
# the usual value for SSDs or data in memory), PostgreSQL probes the indexes instead.
# SET LOCAL: for this transaction only; a pooled connection keeps its settings.
BULK_PLANNING = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL random_page_cost = 1.1"


@asynccontextmanager
async def planned_for_its_size(con: Conn) -> AsyncIterator[None]:
    """Plan the statements run inside for their actual parameters (see BULK_PLANNING): in
    the caller's transaction, or in one of their own."""
    if con.is_in_transaction():
        await con.execute(BULK_PLANNING)
        yield
        return
    async with con.transaction():
        await con.execute(BULK_PLANNING)
        yield


def _params(principal: Principal, purpose: str, recipient: str | None, **extra: Any) -> dict:
    return {
        "purpose": purpose,
        "recipient": recipient,
        "now": utcnow(),
        "grace_days": current_settings().retention_prospect_grace_days,
        "key_id": principal.key_id,
        "key_name": principal.name,
        "key_role": principal.role,
        **extra,
    }


def _member(row: Any) -> AudienceMember:
    # Trusted columns: constructed without validation (a third of the worker's CPU otherwise).
    return AudienceMember.model_construct(
        subject_id=row.subject_id, email=row.email, name=row.name, company=row.company
    )


async def require_target(db: Database, purpose: str, recipient: str | None) -> None:
    """422 for a purpose or recipient not in the catalogue: one statement, on its own."""
    async with db.unit(UnitOfWork.STATEMENT) as con:
        await check_target(con, purpose, recipient)


async def serve_page(
    db: Database,
    principal: Principal,
    *,
    purpose: str,
    recipient: str | None,
    limit: int,
    cursor: str | None,
) -> AudiencePage:
    """A page of the audience. Each chunk is one statement (evaluate, store, audit), atomic
    by itself: no transaction around the page."""
    async with db.unit(UnitOfWork.STATEMENT) as con:
        return await page(
            con, principal, purpose=purpose, recipient=recipient, limit=limit, cursor=cursor
        )


async def next_range_end(
    db: Database, *, after: uuid.UUID | None, scan: int
) -> tuple[uuid.UUID | None, int]:
    """`chunk_end`, one statement on its own connection."""
    async with db.unit(UnitOfWork.STATEMENT) as con:
        return await chunk_end(con, after=after, scan=scan)


async def range_members(
    db: Database,
    principal: Principal,
    *,
    purpose: str,
    recipient: str | None,
    after: uuid.UUID | None,
    upto: uuid.UUID,
) -> list[str]:
    """`range_lines` in a transaction of its own: its plan settings hold for the chunk only."""
    async with db.unit(UnitOfWork.TRANSACTION) as con:
        return await range_lines(
            con, principal, purpose=purpose, recipient=recipient, after=after, upto=upto
        )


async def check_target(con: Conn | AsyncSession, purpose: str, recipient: str | None) -> None:
    """422 for a purpose or recipient not in the catalogue."""
    await _explain_empty(await connection_of(con), purpose, recipient)


async def chunk(
    session: Conn | AsyncSession,
    principal: Principal,
    *,
    purpose: str,
    recipient: str | None,
    after: uuid.UUID | None,
    scan: int,
    take: int | None = None,
) -> tuple[list[AudienceMember], uuid.UUID | None]:
    """The allowed subjects among the next `scan` live subjects after `after` (at most
    `take` of them), and where the next chunk starts (None: the audience is exhausted)."""
    take = scan if take is None else take
    params = _params(principal, purpose, recipient, after=after, upto=None, scan=scan, take=take)
    con = await connection_of(session)
    async with planned_for_its_size(con):
        rows = await SCAN.fetch(con, **params)
    chosen = [r for r in rows if r["chosen"]]
    if len(chosen) == take and take < scan:
        # Stopped inside the chunk: the next one starts after the last subject handed out.
        after = chosen[-1]["subject_id"] if chosen else None
    else:
        after = rows[-1]["subject_id"] if len(rows) == scan else None
    return [_member(r) for r in chosen], after


async def chunk_end(
    con: Conn, *, after: uuid.UUID | None, scan: int
) -> tuple[uuid.UUID | None, int]:
    """The last of the next `scan` live subjects after `after` (None when none remain), and
    how many there are: fewer than `scan`, and this range is the audience's last."""
    # Planned for its values, as the chunks are: the shared generic plan cannot start the
    # index walk at `after` (`:after IS NULL OR id > :after`), and would walk from the first
    # subject for every chunk.
    async with planned_for_its_size(con):
        row = await CHUNK_END.fetchrow(con, after=after, scan=scan)
    return (None, 0) if row is None else (row["upto"], row["n"])


async def range_lines(
    con: Conn,
    principal: Principal,
    *,
    purpose: str,
    recipient: str | None,
    after: uuid.UUID | None,
    upto: uuid.UUID,
) -> list[str]:
    """The NDJSON lines of the allowed live subjects in (`after`, `upto`], each stored as a
    decision. Ranges that meet cover every subject exactly once, however subjects are added
    or erased between computing a range and evaluating it."""
    params = _params(principal, purpose, recipient, after=after, upto=upto, scan=None, take=None)
    async with planned_for_its_size(con):
        rows = await SCAN_LINES.fetch(con, **params)
    return [r["line"] for r in rows if r["chosen"]]


async def page(
    session: Conn | AsyncSession,
    principal: Principal,
    *,
    purpose: str,
    recipient: str | None,
    limit: int,
    cursor: str | None,
) -> AudiencePage:
    """One page of `limit` allowed subjects, scanning as many chunks as that takes."""
    values = decode_cursor(cursor, 1)
    try:
        after = uuid.UUID(values[0]) if values else None
    except (TypeError, ValueError, AttributeError) as exc:
        raise Unprocessable("The cursor is not valid.") from exc
    await check_target(session, purpose, recipient)
    items: list[AudienceMember] = []
    while True:
        need = limit - len(items)
        got, after = await chunk(
            session,
            principal,
            purpose=purpose,
            recipient=recipient,
            after=after,
            scan=max(need, MIN_SCAN),
            take=need,
        )
        items += got
        if after is None or len(items) == limit:
            break
    next_cursor = encode_cursor([str(after)]) if after is not None else None
    return AudiencePage(items=items, next_cursor=next_cursor)


async def gate_subjects(
    session: Conn | AsyncSession,
    principal: Principal,
    *,
    ids: Sequence[uuid.UUID],
    purpose: str,
    recipient: str | None,
    now: datetime | None = None,
) -> list[GateResult]:
    """The gate for these subjects now, each decision stored; what may be pushed for the
    allowed ones. In the order given."""
    if not ids:
        return []
    params = _params(principal, purpose, recipient, ids=list(ids), take=len(ids))
    if now is not None:
        params["now"] = now
    rows = await BY_IDS.fetch(await connection_of(session), **params)
    if not rows:
        await check_target(session, purpose, recipient)
    return [
        GateResult(
            subject_id=r.subject_id,
            allowed=not r.reasons,
            reasons=list(r.reasons),
            member=_member(r) if r.chosen else None,
            email_md5=r.email_md5,
            email_hash=r.email_hash,
        )
        for r in rows
    ]
