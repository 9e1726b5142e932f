"""The consent export: every event with its receipt, row for row against the ledger,
streamed in chunks, incremental without skipping late commits, nothing personal about
erased subjects, CSV cells defused."""

import csv
import io
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from sqlalchemy import insert, text

from app.core.auth import generate_key, hash_key
from app.core.db import create_sessionmaker
from app.main import create_app
from app.models.api_key import ApiKey
from app.services.consent import export as consent_export
from app.services.consent import reading as consent
from app.services.consent.export import CSV_COLUMNS
from tests import gate_state as gs
from tests.conftest import new_subject
from tests.test_consent import give

N = 10_000
FORMULAS = ['=HYPERLINK("http://x")', "+44 20 1234", "-1+1", "@SUM(A1)", "plain"]

LEDGER = text("""
SELECT e.*, s.erased_at IS NOT NULL AS subject_erased FROM consent_events e
JOIN subjects s ON s.id = e.subject_id ORDER BY e.txid, e.id
""")


async def _ledger_of(db, subjects, n=N):
    """N events over `subjects`, with varied purposes, actions, times and hostile evidence."""
    await db.execute(
        text("""
INSERT INTO consent_events (id, subject_id, purpose, recipient, action, method, policy_version,
  form_id, page_url, user_agent, occurred_at, recorded_at, recorded_by, conflict)
SELECT gen_random_uuid(), (CAST(:subjects AS uuid[]))[1 + i % cardinality(CAST(:subjects AS uuid[]))],
  (ARRAY['content_subscriptions','surveys','email_campaigns'])[1 + i % 3], NULL,
  CASE WHEN i % 4 = 0 THEN 'withdrawn' ELSE 'given' END,
  (ARRAY['web_form','email','import'])[1 + i % 3], CASE WHEN i % 5 = 0 THEN NULL ELSE '1' END,
  'form-' || i, 'https://example.com/p/' || i, (CAST(:formulas AS text[]))[1 + i % 5],
  timestamptz '2026-01-01 00:00Z' + i * interval '1 minute', now(), 'import-job',
  CASE WHEN i % 97 = 0 THEN 'GPC signal overrides an earlier explicit consent' END
FROM generate_series(1, :n) i
"""),
        {"subjects": subjects, "formulas": FORMULAS, "n": n},
    )


def _iso(value):
    return None if value is None else value.isoformat()


async def test_ten_thousand_events_match_the_ledger_row_for_row(client, auditor, db):
    subjects = [await gs.subject(db) for _ in range(20)]
    await _ledger_of(db, subjects)
    # An erasure that left evidence behind (say, restored from a backup): still not exported.
    await db.execute(
        text("UPDATE subjects SET erased_at = now(), email = NULL WHERE id = :s"),
        {"s": subjects[0]},
    )
    ledger = (await db.execute(LEDGER)).all()
    assert len(ledger) >= N

    r = await client.get("/v1/consent-events/export?format=ndjson", headers=auditor)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.headers[consent_export.NEXT_CURSOR_HEADER]
    lines = [orjson.loads(line) for line in r.content.splitlines()]
    assert len(lines) == len(ledger)
    receipts = {}
    for sid in subjects:
        for row, receipt in await consent.history_with_receipts(db, subject_id=sid):
            receipts[str(row.id)] = receipt
    for line, row in zip(lines, ledger, strict=True):
        erased = row.subject_erased
        assert line["id"] == str(row.id) and line["subject_id"] == str(row.subject_id)
        for field in (
            "purpose",
            "recipient",
            "action",
            "method",
            "policy_version",
            "notice_sha256",
            "recorded_by",
            "conflict",
        ):
            assert line[field] == getattr(row, field), field
        assert datetime.fromisoformat(line["occurred_at"]) == row.occurred_at
        assert datetime.fromisoformat(line["recorded_at"]) == row.recorded_at
        assert line["subject_erased"] is erased
        for field in ("form_id", "page_url", "user_agent"):
            assert line[field] == (None if erased else getattr(row, field)), field
        if str(row.id) in receipts:
            assert line["receipt"] == orjson.loads(orjson.dumps(receipts[str(row.id)]))
    assert sum(str(row.id) in receipts for row in ledger) == N

    c = await client.get("/v1/consent-events/export?format=csv", headers=auditor)
    assert c.status_code == 200 and c.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(c.text)))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) - 1 == len(ledger)
    col = {name: i for i, name in enumerate(table[0])}
    for cells, row in zip(table[1:], ledger, strict=True):
        assert cells[col["id"]] == str(row.id) and cells[col["purpose"]] == row.purpose
        assert cells[col["consent_receipt_id"]] == str(row.id)
        assert cells[col["pii_principal_id"]] == str(row.subject_id)
        agent = cells[col["user_agent"]]
        if row.subject_erased:
            assert agent == ""
        elif row.user_agent[0] in "=+-@":
            assert agent == "'" + row.user_agent  # defused
        else:
            assert agent == row.user_agent
    assert not any(cell[:1] in ("=", "+", "-", "@") for line in table for cell in line)


async def _peak_while_exporting(db):
    plan = await consent_export.plan(db, purpose=None, since=None, cursor=None)
    tracemalloc.start()
    try:
        chunks, size = 0, 0
        async for chunk in consent_export.ndjson(db, plan):
            chunks += 1
            size += len(chunk)
        return chunks, size, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_the_export_streams_in_chunks_at_flat_memory(db):
    subjects = [await gs.subject(db) for _ in range(5)]
    await _ledger_of(db, subjects, n=N // 2)
    chunks1, size1, peak1 = await _peak_while_exporting(db)
    await _ledger_of(db, subjects, n=N // 2)
    chunks2, size2, peak2 = await _peak_while_exporting(db)
    assert chunks1 >= N // 2 // consent_export.CHUNK and chunks2 >= 2 * chunks1 - 1
    assert size2 > 1.9 * size1
    # Twice the events, the same memory: no more than one chunk is held at a time.
    assert peak2 < 1.25 * peak1, (peak1, peak2)
    assert peak2 < size2 / 2, (peak2, size2)


async def test_erased_subjects_keep_their_ledger_rows_and_lose_personal_data(client, crm, auditor):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
    req = (
        await client.post(
            "/v1/rights-requests", json={"type": "erasure", "subject_id": s["id"]}, headers=crm
        )
    ).json()
    await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "email"}, headers=crm
    )
    done = await client.post(f"/v1/rights-requests/{req['id']}/complete", json={}, headers=crm)
    assert done.json()["outcome"]["erased"] is True
    for fmt in ("ndjson", "csv"):
        r = await client.get(f"/v1/consent-events/export?format={fmt}", headers=auditor)
        assert s["id"] in r.text and s["email"] not in r.text
        # Its own rows only: another test may have committed events with the same evidence.
        own = [line for line in r.text.splitlines() if s["id"] in line]
        assert own and not any("Mozilla/5.0" in x or "form-one" in x for x in own)
    nd = await client.get("/v1/consent-events/export", headers=auditor)
    mine = [orjson.loads(x) for x in nd.content.splitlines() if s["id"].encode() in x]
    assert len(mine) == 1 and mine[0]["subject_erased"] is True
    assert mine[0]["form_id"] is None and mine[0]["user_agent"] is None
    assert mine[0]["receipt"]["piiPrincipalId"] == s["id"]


async def test_filters_bad_input_and_roles(client, crm, auditor, make_key, db):
    sid = await gs.subject(db)
    await gs.consent(db, sid, "surveys", "given", policy_version="1")
    await gs.consent(db, sid, "content_subscriptions", "given", policy_version="1")
    r = await client.get("/v1/consent-events/export?purpose=surveys", headers=crm)
    lines = [orjson.loads(x) for x in r.content.splitlines()]
    assert lines and {x["purpose"] for x in lines} == {"surveys"}
    assert str(sid) in {x["subject_id"] for x in lines}
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    r = await client.get("/v1/consent-events/export", params={"since": later}, headers=crm)
    assert r.status_code == 200 and r.content == b""
    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = await client.get("/v1/consent-events/export", params={"since": earlier}, headers=crm)
    assert str(sid) in r.text
    for params in (
        {"format": "xml"},
        {"since": "2026-01-01T00:00:00"},  # no offset
        {"cursor": "not-a-cursor"},
        {"cursor": "WyJ4Il0"},  # ["x"]
        {"purpose": "no_such_purpose"},
    ):
        r = await client.get("/v1/consent-events/export", params=params, headers=crm)
        assert r.status_code == 422, params
        assert r.headers["content-type"].startswith("application/problem+json")
    for role in ("website", "sync"):
        r = await client.get("/v1/consent-events/export", headers=await make_key(role))
        assert r.status_code == 403, role
    assert (await client.get("/v1/consent-events/export", headers=auditor)).status_code == 200


async def test_incremental_pulls_never_skip_a_late_commit(engine, test_settings):
    """Committed transactions on their own connections (cleaned up afterwards)."""
    app = create_app(test_settings, engine=engine)
    key, sid, ids = generate_key(), uuid.uuid4(), []
    maker = create_sessionmaker(engine)

    async def add_event(conn) -> uuid.UUID:
        event_id = uuid.uuid4()
        await conn.execute(
            text(
                "INSERT INTO consent_events (id, subject_id, purpose, action, method,"
                " policy_version, occurred_at, recorded_at, recorded_by)"
                " VALUES (:id, :s, 'surveys', 'given', 'import', '1', now(), now(), 'test')"
            ),
            {"id": event_id, "s": sid},
        )
        ids.append(event_id)
        return event_id

    async def pull(client, cursor=None):
        params = {"purpose": "surveys", **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/consent-events/export", params=params, headers=headers)
        assert r.status_code == 200, r.text
        mine = {uuid.UUID(orjson.loads(x)["id"]) for x in r.content.splitlines()} & set(ids)
        return mine, r.headers[consent_export.NEXT_CURSOR_HEADER]

    headers = {"Authorization": f"Bearer {key}"}
    async with maker() as s:
        await s.execute(
            insert(ApiKey).values(
                name=f"export-{sid.hex[:8]}", role="auditor", key_hash=hash_key(key)
            )
        )
        await s.commit()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO subjects (id, email, category, source, restricted, created_at, updated_at)"
                    " VALUES (:id, :e, 'prospect', 'enquiry', false, now(), now())"
                ),
                {"id": sid, "e": f"late-{sid.hex[:8]}@example.com"},
            )
            first = await add_event(conn)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            seen, c1 = await pull(client)
            assert seen == {first}
            slow = await engine.connect()
            slow_tx = await slow.begin()
            late = await add_event(slow)  # written first, committed last
            async with engine.begin() as conn:
                quick = await add_event(conn)
            seen, c2 = await pull(client, c1)
            assert seen == set()  # neither: the late one may still commit below the quick one
            await slow_tx.commit()
            await slow.close()
            seen, c3 = await pull(client, c2)
            assert seen == {late, quick}
            seen, _ = await pull(client, c3)
            assert seen == set()
            everything, _ = await pull(client)
            assert everything == {first, late, quick}
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM consent_events WHERE subject_id = :s"), {"s": sid})
            await conn.execute(text("DELETE FROM subjects WHERE id = :s"), {"s": sid})
            await conn.execute(
                text("DELETE FROM api_keys WHERE key_hash = :h"), {"h": hash_key(key)}
            )
