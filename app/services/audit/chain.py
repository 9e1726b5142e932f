"""Sealing and verifying the audit chain (ARCHITECTURE.md, "Event ledger").

Writers append unsealed entries without locks. One sealer at a time (a transaction-level
advisory lock, so one per database however many workers run) gives committed entries the
next positions, chains them with hash = sha256(prev_hash || canonical_json(entry)) and
stores a signed checkpoint of the head. Verification recomputes the chain and checks every
checkpoint's signature against the service's key, which is not in the database. An entry
recording a statement that stored many decisions is also recomputed from those rows
(app.services.audit.statements).
"""

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.driver import Conn, connection_of, prepare
from app.core.errors import ServiceUnavailable
from app.core.signing import Signer
from app.models.base import utcnow
from app.services.audit import statements
from app.services.partitions import archived_positions

SEAL_LOCK = 7_310_552
GENESIS = "0" * 64
BATCH = 2000
DECISIONS_ALTERED = "the decision rows an entry records were altered, removed or added to"
ENTRY_COLUMNS = "id, at, actor_key_id, actor_name, actor_role, action, entity, entity_id, digest"


def chain_entry(row: Any, position: int) -> dict[str, Any]:
    """What the chain hashes for an entry (consent proofs hand it out as it is)."""
    return {
        "position": position,
        "id": row.id,
        "at": row.at.isoformat(),
        "actor_key_id": None if row.actor_key_id is None else str(row.actor_key_id),
        "actor_name": row.actor_name,
        "actor_role": row.actor_role,
        "action": row.action,
        "entity": row.entity,
        "entity_id": row.entity_id,
        "digest": row.digest,
    }


def _entry_of_record(record: Any, position: int) -> tuple[dict[str, Any], bool]:
    """`chain_entry` of a record of UNSEALED (the sealer's rows), built by the driver in C
    rather than field by field: the same keys and values; and whether its digest holds a
    float. The digest comes as text: orjson reads it, or the json module, as SQLAlchemy's
    decoder would, where a float appears (orjson reads an integer past 64 bits as one) or
    where orjson refuses it (an integer of 309 digits or more is "infinity" to orjson; nesting
    past its limit): such an entry is written by the json module too (floats=True)."""
    entry = dict(record)
    entry["position"] = position
    entry["at"] = entry["at"].isoformat()
    if entry["actor_key_id"] is not None:
        entry["actor_key_id"] = str(entry["actor_key_id"])
    try:
        digest = orjson.loads(entry["digest"])
        floats = _has_float(digest)
    except orjson.JSONDecodeError:
        digest, floats = None, True
    entry["digest"] = json.loads(entry["digest"]) if floats else digest
    return entry, floats


def _has_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    return any(type(v) in (float, dict, list) and _has_float(v) for v in value)


def canonical_json(row: Any, position: int) -> bytes:
    entry = chain_entry(row, position)
    return _canonical_bytes(entry, _has_float(entry["digest"]))


def _canonical_bytes(entry: dict[str, Any], floats: bool) -> bytes:
    """Keys sorted, separators ',' and ':', non-ASCII kept as UTF-8: the bytes of
    `json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
    orjson writes the same bytes three times faster (every sealed entry passes here:
    tests/test_audit_canonical.py compares the two), except for some floats (1e-07 is
    `1e-7` to orjson) and integers past 64 bits, which take the json module's path."""
    if not floats:
        try:
            return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError: an integer past 64 bits
            pass
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, row: Any, position: int) -> str:
    return _hash(prev_hash, canonical_json(row, position))


def _hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical).hexdigest()


# The sealer runs on the session's driver connection (app.core.driver): the rows of a batch
# as asyncpg records, not SQLAlchemy rows (12 us an entry, a quarter of sealing, before).
# It walks windows of ids, not `ORDER BY id LIMIT n`: the statistics say almost every entry
# is sealed, so PostgreSQL sorted every unsealed entry of every month to hand out the first
# n, batch after batch, and sealing a backlog took time quadratic in its size (an import,
# or an audience stream, leaves tens of thousands). A window holds at most n entries.
UNSEALED_BOUNDS = prepare(
    "SELECT min(id) AS lo, max(id) AS hi FROM audit_entries"
    " WHERE position IS NULL AND id >= :from_id",
    from_id="bigint",
)
UNSEALED = prepare(
    f"SELECT {ENTRY_COLUMNS.replace('digest', 'digest::text AS digest')} FROM audit_entries"
    " WHERE position IS NULL AND id >= :lo AND id < :lo + :n ORDER BY id",
    lo="bigint",
    n="integer",
)
# A batch's ids and hashes travel as two comma-separated texts: asyncpg checks every element
# of an array parameter in Python (a tenth of the worker's time while an audience streamed).
# Positions follow from the first; each prev_hash is the hash before it.
SEAL = prepare(
    """UPDATE audit_entries e SET position = v.pos, prev_hash = v.prev, hash = v.h FROM (
         SELECT x.id, :first + x.ord - 1 AS pos, x.h,
                coalesce(lag(x.h) OVER (ORDER BY x.ord), :prev) AS prev
         FROM unnest(CAST(string_to_array(:ids, ',') AS bigint[]), string_to_array(:hashes, ','))
           WITH ORDINALITY AS x(id, h, ord)
       ) v
       WHERE e.id = v.id""",
    first="bigint",
    prev="text",
    ids="text",
    hashes="text",
)


async def _unsealed_bounds(con: Conn, from_id: int) -> tuple[int | None, int]:
    row = await UNSEALED_BOUNDS.fetchrow(con, from_id=from_id)
    assert row is not None  # an aggregate: one row, NULLs when nothing is unsealed
    return row["lo"], row["hi"]


async def seal_pending(session: AsyncSession, signer: Signer) -> int:
    """Seal every committed, unsealed entry; returns how many. 0 if another sealer runs."""
    locked = (
        await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SEAL_LOCK})
    ).scalar_one()
    if not locked:
        return 0
    position, prev = await _sealed_head(session)
    sealed = 0
    con = await connection_of(session)
    lo, hi = await _unsealed_bounds(con, 0)
    # Up to the last entry committed now; later ones are the next round's.
    while lo is not None and lo <= hi:
        rows = await UNSEALED.fetch(con, lo=lo, n=BATCH)
        if not rows:  # a gap in the ids (rolled-back writers): on to the next entry
            lo, _ = await _unsealed_bounds(con, lo + BATCH)
            continue
        lo += BATCH
        first, before = position + 1, prev
        hashes = []
        for row in rows:
            position += 1
            prev = _hash(prev, _canonical_bytes(*_entry_of_record(row, position)))
            hashes.append(prev)
        await SEAL.execute(
            con,
            first=first,
            prev=before,
            ids=",".join(str(row["id"]) for row in rows),
            hashes=",".join(hashes),
        )
        await _checkpoint(session, signer, position, prev)
        sealed += len(rows)
    return sealed


async def _sealed_head(session: AsyncSession) -> tuple[int, str]:
    """The last sealed position and its hash (0 and GENESIS before the first seal)."""
    head = (
        await session.execute(
            text(
                "SELECT position, hash FROM audit_entries WHERE position IS NOT NULL"
                " ORDER BY position DESC LIMIT 1"
            )
        )
    ).first()
    if head is None:  # every sealed entry may be in detached (archived) months
        head = (
            await session.execute(
                text(
                    "SELECT position, head_hash AS hash FROM audit_checkpoints"
                    " ORDER BY position DESC LIMIT 1"
                )
            )
        ).first()
    return (head.position, head.hash) if head else (0, GENESIS)


async def _checkpoint(session: AsyncSession, signer: Signer, position: int, head: str) -> None:
    signed_at = utcnow()
    payload = {"position": position, "head_hash": head, "signed_at": signed_at.isoformat()}
    await session.execute(
        text(
            "INSERT INTO audit_checkpoints (position, head_hash, signed_at, key_id, signature)"
            " VALUES (:p, :h, :t, :k, :s)"
        ),
        {"p": position, "h": head, "t": signed_at, "k": signer.kid, "s": signer.sign(payload)},
    )


@dataclass
class Verification:
    ok: bool
    checked: int
    first_bad: int | None
    checkpoints_checked: int
    problem: str | None


def _checkpoint_valid(
    signer: Signer, cp: Any, chain_hashes: dict[int, str], archived: list[tuple[int, int]]
) -> bool:
    payload = signer.verify(cp.signature)
    if payload is None:
        return False
    signed_at = datetime.fromisoformat(payload.get("signed_at", ""))
    in_chain = chain_hashes.get(cp.position) == cp.head_hash
    if cp.position not in chain_hashes and _covered(cp.position, cp.position, archived):
        in_chain = True  # its entry was exported and detached: the signature still counts
    return (
        payload.get("position") == cp.position
        and payload.get("head_hash") == cp.head_hash
        and signed_at == cp.signed_at
        and in_chain
    )


def _covered(lo: int, hi: int, archived: list[tuple[int, int]]) -> bool:
    """Whether positions lo..hi all lie in ranges of detached (exported) audit months."""
    cursor = lo
    for first, last in archived:
        if first <= cursor <= last:
            cursor = last + 1
        if cursor > hi:
            return True
    return cursor > hi


async def verify(session: AsyncSession, signer: Signer) -> Verification:
    """Recompute the whole chain and check every signed checkpoint against it."""
    await seal_pending(session, signer)
    checkpoints = (
        await session.execute(
            text(
                "SELECT position, head_hash, signed_at, signature FROM audit_checkpoints"
                " ORDER BY position"
            )
        )
    ).all()
    wanted = {cp.position for cp in checkpoints}
    archived = await archived_positions(session)
    walked = await _walk_chain(session, wanted, archived)
    if isinstance(walked, Verification):
        return walked
    checked, chain_hashes = walked
    for cp in checkpoints:
        if not _checkpoint_valid(signer, cp, chain_hashes, archived):
            return Verification(
                False,
                checked,
                cp.position,
                len(checkpoints),
                "a checkpoint does not match the chain or its signature",
            )
    return Verification(True, checked, None, len(checkpoints), None)


async def _page(session: AsyncSession, after: int) -> list[Any]:
    """The next BATCH sealed entries after position `after`, in position order."""
    result = await session.execute(
        text(
            f"SELECT {ENTRY_COLUMNS}, position, prev_hash, hash FROM audit_entries"
            " WHERE position > :after ORDER BY position LIMIT :n"
        ),
        {"after": after, "n": BATCH},
    )
    return list(result.all())


async def _walk_chain(
    session: AsyncSession, wanted: set[int], archived: list[tuple[int, int]]
) -> Verification | tuple[int, dict[int, str]]:
    """Every entry in position order, its link and hash recomputed, and a statement's entry
    recomputed from its decision rows: the first failure, or how many entries were checked
    and the chain's hashes at the `wanted` positions."""
    chain_hashes: dict[int, str] = {}
    expected, prev, checked = 1, GENESIS, 0
    after = 0
    digests = await statements.load(session)
    while True:
        rows = await _page(session, after)
        unmatched = await statements.mismatched(session, rows, digests)
        for row in rows:
            if row.position > expected and _covered(expected, row.position - 1, archived):
                # Months before were archived: continue from this entry's link; the signed
                # checkpoints after it still pin everything that follows.
                prev, expected = row.prev_hash, row.position
            if row.position != expected:
                return Verification(False, checked, expected, 0, "an entry is missing")
            if row.prev_hash != prev or chain_hash(prev, row, row.position) != row.hash:
                return Verification(False, checked, row.position, 0, "an entry was altered")
            if row.id in unmatched:
                return Verification(False, checked, row.position, 0, DECISIONS_ALTERED)
            if row.position in wanted:
                chain_hashes[row.position] = row.hash
            prev, expected, checked = row.hash, expected + 1, checked + 1
        if len(rows) < BATCH:
            break
        after = rows[-1].position
    return checked, chain_hashes


# A full walk is heavy (issue 14: 30 at once stalled every request): one at a time per
# worker, whoever asks (GET /v1/audit/verify, the auditor's overview).
_walking = asyncio.Lock()


async def verify_one_at_a_time(session: AsyncSession, signer: Signer) -> Verification:
    """`verify`, or a 503 with Retry-After while another walk runs in this worker."""
    if _walking.locked():
        raise ServiceUnavailable("An audit verification is already running; retry shortly.")
    async with _walking:
        return await verify(session, signer)
