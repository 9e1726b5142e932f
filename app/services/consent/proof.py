"""Proof of consent (Art 7(1), §9): one JSON document an auditor can hand to a regulator
and verify with the public keys (`GET /v1/keys`) alone.

It holds every consent event of the subject (for a purpose, or all), each with its receipt
as JSON and as a compact JWS, the notice text shown, and the sealed audit entries that
recorded the events. A hash chain is linear: to tie an entry to a signed checkpoint the
verifier needs every entry from it up to that checkpoint, so each recorded event comes with
its segment of the chain up to the first checkpoint at or after it (at most one sealing
batch). Audit entries hold ids, keys and outcomes, never personal data.
"""

import asyncio
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.signing import ALGORITHM, Signer
from app.models.base import utcnow
from app.services.audit import chain as audit_chain
from app.services.audit import statements as audit_statements
from app.services.audit.chain import ENTRY_COLUMNS, chain_entry
from app.services.catalogue import controller as controller_identity
from app.services.catalogue.known import unknown_key
from app.services.consent import reading as consent

EVENTS = text(
    consent.EVENTS_WITH_CONTEXT.format(
        where="e.subject_id = :s AND (CAST(:p AS text) IS NULL OR e.purpose = :p)"
    )
)
RECORDING_ENTRIES = text(
    "SELECT entity_id, position FROM audit_entries"
    " WHERE entity = 'consent_event' AND entity_id = ANY(:ids)"
)
COVERING = text(
    "SELECT position, head_hash, signed_at, key_id, signature FROM audit_checkpoints"
    " WHERE position >= :p ORDER BY position LIMIT 1"
)
SEGMENT = text(
    f"SELECT {ENTRY_COLUMNS}, position, prev_hash, hash FROM audit_entries"  # noqa: S608 - constant columns
    " WHERE position BETWEEN :lo AND :hi ORDER BY position"
)
HOW_TO_VERIFY = [
    "Fetch the JWKS from GET /v1/keys; the key with `kid` equal to `key_id` verifies every "
    "JWS here (ES256).",
    "Each event's `receipt_jws` verifies, and its payload equals `receipt`.",
    "Each audit entry's `hash` = hex(sha256(utf8(prev_hash) + utf8(canonical_json(entry)))), "
    "canonical_json: keys sorted, separators ',' and ':', non-ASCII kept as UTF-8.",
    "Within a segment, each entry's `prev_hash` is the previous entry's `hash`.",
    "Each checkpoint's `signature` verifies, its payload names its position, head_hash and "
    "signed_at, and its head_hash is the `hash` of the entry at that position.",
    "Each event's `recorded_by_entry` is an entry whose entity_id is the event id.",
    "An entry whose action is `decision.statement` records one statement that stored many "
    "decisions (other subjects' too, so their rows are not in this proof): their `count`, "
    "`first` and `last` id and the `sha256` of their canonical rows. `decision_rows_match` "
    "says whether the service recomputed each such entry here from the stored rows and "
    "found it equal.",
]


async def _sealed(session: AsyncSession, signer: Signer, event_ids: list[str]) -> dict[str, int]:
    """Positions of the entries that recorded the events, sealing first (the sealer lags
    writes by about a second; another worker's sealer may hold the lock)."""
    positions: dict[str, int] = {}
    for _ in range(20):
        await audit_chain.seal_pending(session, signer)
        rows = (await session.execute(RECORDING_ENTRIES, {"ids": event_ids})).all()
        positions = {r.entity_id: r.position for r in rows if r.position is not None}
        if len(positions) == len(event_ids):
            break
        await asyncio.sleep(0.1)
    return positions


def _event(row: Any, signer: Signer, notices: dict[str, str | None]) -> dict[str, Any]:
    receipt = consent.receipt_of(row)
    public = consent.to_public(row).model_dump(mode="json")
    return {
        "event": public,
        "receipt": receipt,
        "receipt_jws": signer.sign(receipt),
        "notice": (
            {"sha256": row.notice_sha256, "text": notices.get(row.notice_sha256)}
            if row.notice_sha256
            else None
        ),
        # The same event as an ISO/IEC TS 27560 record in JSON-LD (W3C DPV terms).
        "record": f"/v1/consent-events/{row.id}/record",
    }


async def _segments(
    session: AsyncSession, positions: list[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """The chain from each position to its covering checkpoint, merged; the checkpoints;
    and the rows of the entries in it that record a statement storing many decisions."""
    covering: dict[int, Any] = {}
    lo_by_cp: dict[int, int] = {}
    for position in sorted(set(positions)):
        cp = (await session.execute(COVERING, {"p": position})).first()
        if cp is not None:
            covering[cp.position] = cp
            lo_by_cp.setdefault(cp.position, position)  # ascending: the lowest comes first
    entries: dict[int, dict[str, Any]] = {}
    statement_rows: dict[int, Any] = {}
    for cp_pos, lo in lo_by_cp.items():
        for row in await session.execute(SEGMENT, {"lo": lo, "hi": cp_pos}):
            if audit_statements.is_statement(row):
                statement_rows[row.position] = row
            entries[row.position] = {
                "entry": chain_entry(row, row.position),
                "prev_hash": row.prev_hash,
                "hash": row.hash,
            }
    checkpoints = [
        {
            "position": cp.position,
            "head_hash": cp.head_hash,
            "signed_at": cp.signed_at.isoformat(),
            "key_id": cp.key_id,
            "signature": cp.signature,
        }
        for cp in sorted(covering.values(), key=lambda c: c.position)
    ]
    return [entries[p] for p in sorted(entries)], checkpoints, list(statement_rows.values())


async def _decision_rows_match(session: AsyncSession, statement_rows: list[Any]) -> bool:
    """Whether every statement entry of the segments still matches its decision rows."""
    if not statement_rows:
        return True
    digests = await audit_statements.load(session)
    return not await audit_statements.mismatched(session, statement_rows, digests)


async def _require_known(session: AsyncSession, subject_id: uuid.UUID, purpose: str | None) -> None:
    """404 for an unknown subject, 422 for an unknown purpose (one round trip for both)."""
    known = (
        await session.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM subjects WHERE id = :s),"
                " CAST(:p AS text) IS NULL OR EXISTS (SELECT 1 FROM purposes WHERE key = :p)"
            ),
            {"s": subject_id, "p": purpose},
        )
    ).one()
    if not known[0]:
        raise NotFound("No subject with this id.")
    if not known[1]:
        assert purpose is not None  # no purpose asked for is always known
        raise await unknown_key(session, "purpose", purpose, field="purpose")


async def _notices(session: AsyncSession, rows: list[Any]) -> dict[str, str | None]:
    """The text of each notice the events cite, by its sha256."""
    shas = sorted({r.notice_sha256 for r in rows if r.notice_sha256})
    return dict(
        (
            await session.execute(
                text("SELECT sha256, text FROM consent_notices WHERE sha256 = ANY(:h)"),
                {"h": shas},
            )
        ).all()
    )


def _complete(
    rows: list[Any], positions: dict[str, int], checkpoints: list[dict[str, Any]]
) -> bool:
    """Every event has its recording entry, and a signed checkpoint covers each entry."""
    return len(positions) == len(rows) and all(
        any(cp["position"] >= p for cp in checkpoints) for p in positions.values()
    )


async def consent_proof(
    session: AsyncSession,
    signer: Signer,
    *,
    subject_id: uuid.UUID,
    purpose: str | None,
) -> dict[str, Any]:
    await _require_known(session, subject_id, purpose)
    rows = list((await session.execute(EVENTS, {"s": subject_id, "p": purpose})).all())
    notices = await _notices(session, rows)
    positions = await _sealed(session, signer, [str(r.id) for r in rows])
    events = [_event(r, signer, notices) for r in rows]
    for item in events:
        item["recorded_by_entry"] = positions.get(item["event"]["id"])
    entries, checkpoints, statement_rows = await _segments(session, list(positions.values()))
    return {
        "format": "consent-api/consent-proof/1",
        "subject_id": str(subject_id),
        "purpose": purpose,
        "generated_at": utcnow().isoformat(),
        "controller": await controller_identity.shown(session),
        "verification": {
            "jwks": "/v1/keys",
            "algorithm": ALGORITHM,
            "key_id": signer.kid,
            "steps": HOW_TO_VERIFY,
        },
        "complete": _complete(rows, positions, checkpoints),
        "decision_rows_match": await _decision_rows_match(session, statement_rows),
        "events": events,
        "audit_entries": entries,
        "checkpoints": checkpoints,
        "checkpoint": checkpoints[-1] if checkpoints else None,
    }
