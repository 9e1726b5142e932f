"""Every consent event with its receipt fields, in bulk (NDJSON or CSV), for an auditor or
a warehouse.

Streamed in keyset chunks of `CHUNK` rows, each its own short statement, so memory stays
flat however long the ledger is. Order and resumption follow the writing transaction
(`consent_events.txid`): an export covers every event whose transaction is older than the
oldest transaction still running when it starts, so a later export that starts there
(`cursor`) misses nothing that commits late. Erased subjects' events keep their ledger
fields and lose every personal one (evidence), whatever erasure left behind.
"""

import csv
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, DateTime, String, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Unprocessable
from app.core.pagination import decode_cursor, encode_cursor
from app.models.controller import ControllerPublic
from app.services.catalogue import controller as controller_identity
from app.services.catalogue import entries as catalogue
from app.services.consent.receipts import build_receipt
from app.services.rights.exports import csv_cell

CHUNK = 1000
NEXT_CURSOR_HEADER = "X-Next-Cursor"

# Transactions below `upto` have all ended; the current transaction sees its own writes.
BOUNDARY = text(
    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS upto,"
    " pg_current_xact_id_if_assigned()::text::bigint AS own"
)

CHUNK_SQL = text("""
SELECT e.txid, e.id, e.subject_id, e.purpose, e.recipient, e.action, e.method,
  e.policy_version, e.notice_sha256,
  CASE WHEN s.erased_at IS NULL THEN e.form_id END AS form_id,
  CASE WHEN s.erased_at IS NULL THEN e.page_url END AS page_url,
  CASE WHEN s.erased_at IS NULL THEN e.user_agent END AS user_agent,
  e.occurred_at, e.recorded_at, e.recorded_by, e.conflict,
  s.erased_at IS NOT NULL AS subject_erased
FROM consent_events e JOIN subjects s ON s.id = e.subject_id
WHERE ((e.txid >= :after AND e.txid < :upto) OR e.txid = :own)
  AND (e.txid, e.id) > (:last_txid, CAST(:last_id AS uuid))
  AND (:purpose IS NULL OR e.purpose = :purpose)
  AND (CAST(:since AS timestamptz) IS NULL OR e.recorded_at >= :since)
ORDER BY e.txid, e.id
LIMIT :n
""").bindparams(
    bindparam("own", type_=BigInteger()),
    bindparam("purpose", type_=String()),
    bindparam("since", type_=DateTime(timezone=True)),
)
SET_ORDERED_SCAN = text(
    "SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true)"
)
PURPOSES = text("SELECT key, description, direct_marketing FROM purposes")
FIRST_ID = "00000000-0000-0000-0000-000000000000"

EVENT_FIELDS = (
    "id",
    "subject_id",
    "purpose",
    "recipient",
    "action",
    "method",
    "policy_version",
    "notice_sha256",
    "form_id",
    "page_url",
    "user_agent",
    "occurred_at",
    "recorded_at",
    "recorded_by",
    "conflict",
    "subject_erased",
)
# CSV: the receipt flattened, Kantara v1.1 names with the ISO/IEC TS 27560 state.
RECEIPT_FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "receipt_version": lambda r: r["version"],
    "jurisdiction": lambda r: r["jurisdiction"],
    "consent_timestamp": lambda r: r["consentTimestamp"],
    "collection_method": lambda r: r["collectionMethod"],
    "consent_receipt_id": lambda r: r["consentReceiptID"],
    "language": lambda r: r["language"],
    "pii_principal_id": lambda r: r["piiPrincipalId"],
    "pii_controller": lambda r: r["piiControllers"][0]["piiController"],
    "controller_contact": lambda r: r["piiControllers"][0]["contact"],
    "policy_url": lambda r: r["policyUrl"],
    "purpose_description": lambda r: r["services"][0]["purposes"][0]["purpose"],
    "purpose_category": lambda r: "; ".join(r["services"][0]["purposes"][0]["purposeCategory"]),
    "consent_type": lambda r: r["services"][0]["purposes"][0]["consentType"],
    "pii_categories": lambda r: "; ".join(r["services"][0]["purposes"][0]["piiCategory"]),
    "termination": lambda r: r["services"][0]["purposes"][0]["termination"],
    "third_party_disclosure": lambda r: r["services"][0]["purposes"][0]["thirdPartyDisclosure"],
    "third_party_name": lambda r: r["services"][0]["purposes"][0]["thirdPartyName"],
    "state": lambda r: r["iso27560"]["state"],
    "supervisory_authority": lambda r: r["iso27560"]["supervisory_authority"],
}
CSV_COLUMNS = (*EVENT_FIELDS, *RECEIPT_FIELDS)


@dataclass
class ExportPlan:
    """What one export covers, fixed before the first byte so the next cursor can be sent
    as a header."""

    after: int
    upto: int
    own: int | None
    purpose: str | None
    since: datetime | None
    next_cursor: str
    purposes: dict[str, tuple[str, bool, list[str]]]  # description, marketing, third parties
    policy_urls: dict[str, str | None]
    controller: ControllerPublic  # as the export begins: every receipt in it names the same


def _decode(cursor: str | None) -> int:
    values = decode_cursor(cursor, 1)
    if values is None:
        return 0
    if not isinstance(values[0], int) or isinstance(values[0], bool) or values[0] < 0:
        raise Unprocessable("The cursor is not valid.", field="cursor")
    return values[0]


async def plan(
    session: AsyncSession, *, purpose: str | None, since: datetime | None, cursor: str | None
) -> ExportPlan:
    """Check the request and fix the export's range (errors before any byte is sent)."""
    after = _decode(cursor)
    if purpose is not None:
        await catalogue.require_purposes(session, [purpose], field="purpose")
    bounds = (await session.execute(BOUNDARY)).one()
    recipients = (await session.execute(text("SELECT name, purposes FROM recipients"))).all()
    purposes = {
        r.key: (
            r.description,
            r.direct_marketing,
            sorted(x.name for x in recipients if r.key in x.purposes),
        )
        for r in await session.execute(PURPOSES)
    }
    policy_urls = {
        r.version: r.url for r in await session.execute(text("SELECT version, url FROM policies"))
    }
    upto = max(int(bounds.upto), after)
    return ExportPlan(
        after=after,
        upto=upto,
        own=bounds.own,
        purpose=purpose,
        since=since,
        next_cursor=encode_cursor([upto]),
        purposes=purposes,
        policy_urls=policy_urls,
        controller=await controller_identity.identity(session),
    )


def _receipt(row: Any, p: ExportPlan) -> dict[str, Any]:
    description, marketing, third_parties = p.purposes[row.purpose]
    return build_receipt(
        row,
        purpose_description=description,
        direct_marketing=marketing,
        policy_url=p.policy_urls.get(row.policy_version or ""),
        third_parties=third_parties,
        controller=p.controller,
    )


async def _chunks(session: AsyncSession, p: ExportPlan) -> AsyncIterator[list[Any]]:
    # Each chunk must be an ordered walk of ix_consent_events_txid_id that stops after CHUNK
    # rows. The row comparison's selectivity is misestimated (~0.2 %), and the planner then
    # prefers reading every remaining row and sorting them: each chunk would cost the whole
    # rest of the ledger (71 ms per chunk at 100k events). For this transaction only:
    await session.execute(SET_ORDERED_SCAN)
    last_txid, last_id = -1, FIRST_ID
    while True:
        params = {
            "after": p.after,
            "upto": p.upto,
            "own": p.own,
            "last_txid": last_txid,
            "last_id": last_id,
            "purpose": p.purpose,
            "since": p.since,
            "n": CHUNK,
        }
        rows = list((await session.execute(CHUNK_SQL, params)).all())
        if rows:
            yield rows
        if len(rows) < CHUNK:
            return
        last_txid, last_id = rows[-1].txid, str(rows[-1].id)


def _event(row: Any) -> dict[str, Any]:
    # asyncpg's UUID type is not the standard library's: orjson writes it through `str`.
    return {f: getattr(row, f) for f in EVENT_FIELDS}


async def ndjson(session: AsyncSession, p: ExportPlan) -> AsyncIterator[bytes]:
    """One JSON object per line: the event's fields and its `receipt`."""
    async for rows in _chunks(session, p):
        yield b"".join(
            orjson.dumps({**_event(r), "receipt": _receipt(r, p)}, default=str) + b"\n"
            for r in rows
        )


async def csv_rows(session: AsyncSession, p: ExportPlan) -> AsyncIterator[bytes]:
    """A header line, then one row per event; every cell defused against formulas."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue().encode()
    async for rows in _chunks(session, p):
        out.seek(0)
        out.truncate()
        for r in rows:
            receipt = _receipt(r, p)
            values = [*(_value(v) for v in _event(r).values())]
            values += [_value(get(receipt)) for get in RECEIPT_FIELDS.values()]
            writer.writerow([csv_cell(v) for v in values])
        yield out.getvalue().encode()


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
