"""The audit chain records a statement, not a row: a batch or an audience chunk writes one
entry holding the count, id range and SHA-256 of its decision rows; verification and the
consent proof recompute it from the rows, so a row edited, deleted or added is reported."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from app.core.auth import ROLE_SCOPES, Principal
from app.services.gate.decisions import decide_batch
from tests import gate_state as gs
from tests.conftest import new_subject
from tests.test_consent import give

CRM = Principal(uuid.uuid4(), "statement-test", "crm", ROLE_SCOPES["crm"])
STATEMENT_ENTRIES = text(
    "SELECT id, position, digest FROM audit_entries WHERE action = 'decision.statement' ORDER BY id"
)
# Recomputed here independently of the service's SQL: the documented canonical row.
CANONICAL_SHA256 = text("""
SELECT count(*) AS n, encode(sha256(convert_to(string_agg(jsonb_build_array(d.id,
  to_char(d.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
  d.requester_key_id, d.requester_name, d.requester_role, d.subject_id, d.purpose,
  d.recipient, d.allowed, d.basis, d.reasons)::text || E'\\n', '' ORDER BY d.id), 'UTF8')),
  'hex') AS sha256
FROM decisions d WHERE d.id = ANY(:ids)
""")


async def _batch(client, crm, db, n=25):
    subjects = [str(await gs.subject(db)) for _ in range(n)]
    r = await client.post(
        "/v1/decisions/batch", json={"purpose": "surveys", "subjects": subjects}, headers=crm
    )
    assert r.status_code == 200, r.text
    return [uuid.UUID(item["id"]) for item in r.json()["items"]]


async def _verify(client, auditor):
    r = await client.get("/v1/audit/verify", headers=auditor)
    assert r.status_code == 200, r.text
    return r.json()


async def _entry_of(db, ids):
    """The statement entry whose range holds these decision ids (sealed by now)."""
    for row in (await db.execute(STATEMENT_ENTRIES)).all():
        if row.digest["first"] == str(min(ids)) and row.digest["last"] == str(max(ids)):
            return row
    raise AssertionError("no statement entry covers the decisions")


async def test_a_batch_writes_one_entry_with_count_and_digest(client, crm, auditor, db):
    before = (await db.execute(text("SELECT count(*) FROM audit_entries"))).scalar()
    ids = await _batch(client, crm, db, n=25)
    after = (await db.execute(text("SELECT count(*) FROM audit_entries"))).scalar()
    assert after == before + 1
    assert (await _verify(client, auditor))["ok"] is True
    entry = await _entry_of(db, ids)
    expected = (await db.execute(CANONICAL_SHA256, {"ids": ids})).one()
    assert entry.digest["count"] == 25 == expected.n
    assert entry.digest["sha256"] == expected.sha256
    assert entry.digest["purpose"] == "surveys" and entry.digest["allowed"] == 0
    assert len({i.bytes[:12] for i in ids}) == 1  # one prefix: the range is the statement's


async def _tampered(client, auditor, db, entry, sql, params):
    await db.execute(text(sql), params)
    body = await _verify(client, auditor)
    assert body["ok"] is False and body["first_bad"] == entry.position, body
    assert "decision rows" in body["problem"]


async def test_editing_a_decision_inside_a_batch_is_reported(client, crm, auditor, db):
    ids = await _batch(client, crm, db)
    await _verify(client, auditor)
    entry = await _entry_of(db, ids)
    await _tampered(
        client,
        auditor,
        db,
        entry,
        "UPDATE decisions SET allowed = true, reasons = '{}' WHERE id = :i",
        {"i": ids[7]},
    )


async def test_deleting_a_decision_inside_a_batch_is_reported(client, crm, auditor, db):
    ids = await _batch(client, crm, db)
    await _verify(client, auditor)
    entry = await _entry_of(db, ids)
    await _tampered(
        client, auditor, db, entry, "DELETE FROM decisions WHERE id = :i", {"i": ids[3]}
    )


async def test_inserting_a_decision_in_a_batch_range_is_reported(client, crm, auditor, db):
    ids = await _batch(client, crm, db)
    await _verify(client, auditor)
    entry = await _entry_of(db, ids)
    # The key is (id, decided_at): a copy a second later is a new row with an id in range.
    await _tampered(
        client,
        auditor,
        db,
        entry,
        "INSERT INTO decisions SELECT id, decided_at + interval '1 second', requester_key_id,"
        " requester_name, requester_role, subject_id, purpose, recipient, true, basis, '{}'"
        " FROM decisions WHERE id = :i",
        {"i": ids[5]},
    )


async def _audience(client, db, make_key, n=12):
    for _ in range(n):
        sid = await gs.subject(db)
        await gs.basis(db, sid, "email_campaigns", "consent")
        await gs.consent(db, sid, "email_campaigns", "given")
    sync = await make_key("sync")
    r = await client.get("/v1/audiences/email_campaigns?limit=500", headers=sync)
    assert r.status_code == 200, r.text
    return [uuid.UUID(i["subject_id"]) for i in r.json()["items"]]


async def test_an_audience_chunk_writes_one_entry_and_tampering_is_reported(
    client, auditor, db, make_key
):
    members = await _audience(client, db, make_key)
    assert len(members) >= 12
    assert (await _verify(client, auditor))["ok"] is True
    rows = (
        await db.execute(
            text(
                "SELECT id FROM decisions WHERE requester_role = 'sync'"
                " AND subject_id = ANY(:m) ORDER BY id"
            ),
            {"m": members},
        )
    ).all()
    ids = [r.id for r in rows]
    assert len(ids) == len(members)
    entries = [
        e
        for e in (await db.execute(STATEMENT_ENTRIES)).all()
        if uuid.UUID(e.digest["first"]) <= ids[-1] <= uuid.UUID(e.digest["last"])
    ]
    assert len(entries) == 1  # the chunk that stored it (others: if other subjects are live)
    entry = entries[0]
    assert entry.digest["count"] == entry.digest["allowed"] >= 1
    await _tampered(
        client,
        auditor,
        db,
        entry,
        "UPDATE decisions SET subject_id = :other WHERE id = :i",
        {"other": uuid.uuid4(), "i": ids[-1]},
    )


async def test_old_per_row_entries_still_verify(client, crm, auditor, db):
    """Entries written before the statement form, one `decision.create` per row of a batch."""
    sid = await gs.subject(db)
    await db.execute(
        text("""
        WITH d AS (
          INSERT INTO decisions (id, decided_at, requester_name, requester_role, subject_id,
                                 purpose, allowed, basis, reasons)
          SELECT gen_random_uuid(), now(), 'old', 'crm', :s, 'surveys', false, NULL,
                 ARRAY['no_lawful_basis']
          FROM generate_series(1, 3)
          RETURNING id, subject_id
        )
        INSERT INTO audit_entries (actor_name, actor_role, action, entity, entity_id, digest)
        SELECT 'old', 'crm', 'decision.create', 'decision', id::text,
               jsonb_build_object('subject_id', subject_id, 'purpose', 'surveys',
                                  'recipient', NULL, 'allowed', false,
                                  'reasons', '["no_lawful_basis"]'::jsonb)
        FROM d
        """),
        {"s": sid},
    )
    await _batch(client, crm, db, n=4)
    assert (await _verify(client, auditor))["ok"] is True


async def test_a_statement_entry_before_the_form_began_is_reported(client, crm, auditor, db):
    ids = await _batch(client, crm, db, n=3)
    await _verify(client, auditor)
    entry = await _entry_of(db, ids)
    await db.execute(
        text("UPDATE audit_forms SET from_entry_id = :i WHERE form = 'decision.statement'"),
        {"i": entry.id + 1},
    )
    body = await _verify(client, auditor)
    assert body["ok"] is False and body["first_bad"] == entry.position


async def test_the_consent_proof_recomputes_the_statements_in_its_segment(client, crm, auditor, db):
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    r = await client.post("/v1/consent-events", json=give(sid), headers=crm)
    assert r.status_code == 201, r.text
    ids = await _batch(client, crm, db, n=5)  # sealed with the event: in its segment
    url = f"/v1/subjects/{sid}/consent-proof"
    doc = (await client.get(url, headers=auditor)).json()
    actions = [e["entry"]["action"] for e in doc["audit_entries"]]
    assert "decision.statement" in actions
    assert doc["complete"] is True and doc["decision_rows_match"] is True
    await db.execute(text("DELETE FROM decisions WHERE id = :i"), {"i": ids[0]})
    doc = (await client.get(url, headers=auditor)).json()
    assert doc["decision_rows_match"] is False


async def test_a_statement_whose_decision_month_was_archived_still_verifies(client, auditor, db):
    """Its decisions may lie in a month exported and detached before the entry's own (a
    statement at midnight): rows that cannot be read back are not a tampering."""
    subjects = [await gs.subject(db) for _ in range(3)]
    past = datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC)
    items = await decide_batch(db, CRM, subjects=subjects, purpose="surveys", now=past)
    ids = [i.id for i in items]
    assert (await _verify(client, auditor))["ok"] is True
    entry = await _entry_of(db, ids)
    await db.execute(text("DELETE FROM decisions WHERE id = ANY(:i)"), {"i": ids})
    assert (await _verify(client, auditor))["first_bad"] == entry.position
    await db.execute(
        text(
            "INSERT INTO partition_archives (parent, partition, month, path, sha256, rows,"
            " archived_at) VALUES ('decisions', 'decisions_2025_01', '2025-01-01', '/x',"
            " :sha, 3, now())"
        ),
        {"sha": "0" * 64},
    )
    assert (await _verify(client, auditor))["ok"] is True
