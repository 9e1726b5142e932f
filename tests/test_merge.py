"""The same person held twice: `POST /v1/subjects/{id}/merge`, checked on the stored rows.

Nothing stored is rewritten (events, decisions, requests keep the merged subject's id); the
merged subject is marked `merged_into`; every read of the survivor includes its records."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from tests import gate_state as gs
from tests.conftest import new_subject
from tests.test_consent import give

T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


async def _subject(client, crm, **kw) -> dict[str, Any]:
    r = await client.post("/v1/subjects", json=new_subject(**kw), headers=crm)
    assert r.status_code == 201, r.text
    return r.json()


async def _basis(client, crm, sid, purpose, **body) -> None:
    r = await client.put(f"/v1/subjects/{sid}/bases/{purpose}", json=body, headers=crm)
    assert r.status_code == 200, r.text


async def _consent(client, crm, sid, purpose, action, days) -> dict[str, Any]:
    at = (T0 + timedelta(days=days)).isoformat()
    body = give(sid, purpose=purpose, occurred_at=at)
    if action == "withdrawn":
        body = {"subject_id": sid, "purpose": purpose, "action": "withdrawn", "occurred_at": at}
    r = await client.post("/v1/consent-events", json=body, headers=crm)
    assert r.status_code == 201, r.text
    return r.json()


async def _decide(client, crm, sid, purpose) -> dict[str, Any]:
    body = {"subject_id": sid, "purpose": purpose}
    r = await client.post("/v1/decisions", json=body, headers=crm)
    assert r.status_code == 200, r.text
    return r.json()


async def _merge(client, crm, into, from_, **headers):
    return await client.post(
        f"/v1/subjects/{into}/merge", json={"from": from_}, headers={**crm, **headers}
    )


async def _rows(db, sql: str, **params) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in await db.execute(text(sql), params)]


async def _ledger(db, *ids: str) -> dict[str, list[dict[str, Any]]]:
    """Every stored row a merge must not rewrite, per table."""
    ids_ = [uuid.UUID(i) for i in ids]
    tables = ("consent_events", "decisions", "rights_requests", "lawful_basis_history")
    return {
        t: await _rows(db, f"SELECT * FROM {t} WHERE subject_id = ANY(:ids) ORDER BY 1", ids=ids_)
        for t in tables
    }


async def _pair(client, crm) -> tuple[dict, dict]:
    """A (the survivor) and B (to merge) with consents, bases, a decision and a request."""
    a, b = await _subject(client, crm), await _subject(client, crm, job_title="CTO")
    for s in (a, b):
        await _basis(client, crm, s["id"], "content_subscriptions", basis="consent")
    await _consent(client, crm, a["id"], "content_subscriptions", "given", 1)  # older
    await _consent(client, crm, b["id"], "content_subscriptions", "withdrawn", 5)  # newer wins
    await _consent(client, crm, a["id"], "email_campaigns", "withdrawn", 9)  # A's newer wins
    await _consent(client, crm, b["id"], "email_campaigns", "given", 2)
    await _consent(client, crm, b["id"], "business_development", "given", 3)  # only B
    await _decide(client, crm, b["id"], "business_development")
    r = await client.post(
        "/v1/rights-requests", json={"type": "access", "subject_id": b["id"]}, headers=crm
    )
    assert r.status_code == 201, r.text
    return a, b


async def test_merge_marks_the_tombstone_and_rewrites_nothing(client, crm, db):
    a, b = await _pair(client, crm)
    before = await _ledger(db, a["id"], b["id"])
    r = await _merge(client, crm, a["id"], b["id"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["subject"]["id"] == a["id"] and out["merged"] == b["id"]
    assert out["consents_taken"] == ["business_development", "content_subscriptions"]
    # B's consents made consent its basis there; A had none for these purposes.
    assert out["bases_set"] == ["business_development", "email_campaigns"]
    (row,) = await _rows(db, "SELECT * FROM subjects WHERE id = :id", id=uuid.UUID(b["id"]))
    assert row["merged_into"] == uuid.UUID(a["id"]) and row["merged_at"] is not None
    assert row["email"] == b["email"] and row["job_title"] == "CTO"  # the record stays held
    assert row["erased_at"] is None
    after = await _ledger(db, a["id"], b["id"])
    for table, rows in before.items():  # every row stored before is there, unchanged
        assert [r for r in after[table] if r in rows] == rows, table
    assert after["consent_events"] == before["consent_events"]
    assert after["decisions"] == before["decisions"]
    read = (await client.get(f"/v1/subjects/{b['id']}", headers=crm)).json()
    assert read["merged_into"] == a["id"]


async def test_newest_consent_event_across_both_decides_per_purpose(client, crm, db):
    a, b = await _pair(client, crm)
    assert (await _merge(client, crm, a["id"], b["id"])).status_code == 200
    state = {
        r["purpose"]: r
        for r in await _rows(
            db,
            "SELECT cs.purpose, cs.status, e.subject_id AS event_subject FROM consent_state cs"
            " JOIN consent_events e ON e.id = cs.event_id WHERE cs.subject_id = :s",
            s=uuid.UUID(a["id"]),
        )
    }
    assert state["content_subscriptions"]["status"] == "withdrawn"  # B's, newer
    assert state["content_subscriptions"]["event_subject"] == uuid.UUID(b["id"])
    assert state["email_campaigns"]["status"] == "withdrawn"  # A's, newer
    assert state["email_campaigns"]["event_subject"] == uuid.UUID(a["id"])
    assert state["business_development"]["status"] == "given"  # only B had one
    assert (await _decide(client, crm, a["id"], "content_subscriptions"))["reasons"] == [
        "consent_withdrawn"
    ]
    assert (await _decide(client, crm, a["id"], "business_development"))["allowed"] is True
    api = (await client.get(f"/v1/subjects/{a['id']}/consents", headers=crm)).json()
    assert {s["purpose"]: s["status"] for s in api["items"]}["content_subscriptions"] == "withdrawn"


async def test_basis_only_the_other_had_is_set_with_the_merge_as_actor(client, crm, db):
    a, b = await _pair(client, crm)
    await _basis(client, crm, b["id"], "surveys", basis="legitimate_interests", lia_ref="LIA-9")
    await _basis(client, crm, a["id"], "day_to_day_communications", basis="contract",
                 contract_ref="C-A")  # fmt: skip
    await _basis(client, crm, b["id"], "day_to_day_communications", basis="contract",
                 contract_ref="C-B")  # fmt: skip
    out = (await _merge(client, crm, a["id"], b["id"])).json()
    assert out["bases_set"] == ["business_development", "email_campaigns", "surveys"]
    bases = {
        r["purpose"]: r
        for r in await _rows(
            db, "SELECT * FROM lawful_bases WHERE subject_id = :s", s=uuid.UUID(a["id"])
        )
    }
    assert bases["surveys"]["basis"] == "legitimate_interests"
    assert bases["surveys"]["lia_ref"] == "LIA-9"
    assert bases["surveys"]["set_by"] == f"merge:{b['id']}"
    assert bases["day_to_day_communications"]["contract_ref"] == "C-A"  # A's own stays
    (entry,) = await _rows(
        db,
        "SELECT * FROM lawful_basis_history WHERE subject_id = :s AND purpose = 'surveys'",
        s=uuid.UUID(a["id"]),
    )
    assert entry["actor"] == f"merge:{b['id']}" and entry["previous"] is None
    listed = (await client.get(f"/v1/subjects/{a['id']}/bases", headers=crm)).json()
    assert "surveys" in {x["purpose"] for x in listed["items"]}
    history = (
        await client.get(f"/v1/subjects/{a['id']}/bases/surveys/history", headers=crm)
    ).json()["items"]
    assert [h["subject_id"] for h in history] == [b["id"], a["id"]]  # B's own, then the merge's


async def test_reads_of_the_survivor_include_the_merged_records(client, crm, db):
    a, b = await _pair(client, crm)
    b_events = {
        r["id"] for r in await _rows(db, "SELECT id FROM consent_events WHERE subject_id = :s",
                                     s=uuid.UUID(b["id"]))
    }  # fmt: skip
    assert (await _merge(client, crm, a["id"], b["id"])).status_code == 200
    events = (await client.get(f"/v1/consent-events?subject_id={a['id']}", headers=crm)).json()
    listed = {uuid.UUID(e["id"]) for e in events["items"]}
    assert b_events <= listed and len(listed) == len(b_events) + 2
    requests = (await client.get(f"/v1/rights-requests?subject_id={a['id']}", headers=crm)).json()[
        "items"
    ]
    assert [r["subject_id"] for r in requests] == [b["id"]]
    req = (
        await client.post(
            "/v1/rights-requests", json={"type": "access", "subject_id": a["id"]}, headers=crm
        )
    ).json()
    await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "email"}, headers=crm
    )
    done = await client.post(f"/v1/rights-requests/{req['id']}/complete", json={}, headers=crm)
    assert done.status_code == 200, done.text
    report = (
        await client.get(f"/v1/rights-requests/{req['id']}/export?format=json", headers=crm)
    ).json()
    history_ids = {uuid.UUID(e["event_id"]) for e in report["consent_history"]}
    assert b_events <= history_ids
    assert [m["subject_id"] for m in report["merged_records"]] == [b["id"]]
    assert report["merged_records"][0]["email"] == b["email"]
    assert any(d["purpose"] == "business_development" for d in report["decisions_last_12_months"])


async def test_opt_outs_and_objections_carry_over(client, crm, db):
    a, b = await _subject(client, crm), await _subject(client, crm)
    await _basis(client, crm, a["id"], "business_development", basis="legitimate_interests",
                 lia_ref="LIA-1")  # fmt: skip
    await _basis(client, crm, a["id"], "surveys", basis="legitimate_interests", lia_ref="LIA-2")
    r = await client.post(
        "/v1/opt-outs", json={"email": b["email"], "channel": "email", "source": "crm"}, headers=crm
    )
    assert r.status_code == 201, r.text
    await gs.objection(db, uuid.UUID(b["id"]), "surveys")
    assert (await _decide(client, crm, a["id"], "business_development"))["allowed"] is True
    out = (await _merge(client, crm, a["id"], b["id"])).json()
    assert out["opt_outs_carried"] == 1 and out["objections_added"] == ["surveys"]
    (optout,) = await _rows(
        db,
        "SELECT channel FROM marketing_optouts WHERE email_hash = :h",
        h=gs.email_hash(a["email"]),
    )
    assert optout["channel"] == "email"
    (objection,) = await _rows(
        db, "SELECT source FROM objections WHERE subject_id = :s", s=uuid.UUID(a["id"])
    )
    assert objection["source"] == "crm"
    assert (await _decide(client, crm, a["id"], "business_development"))["reasons"] == [
        "marketing_opt_out"
    ]
    assert (await _decide(client, crm, a["id"], "surveys"))["reasons"] == ["objected"]


async def test_a_decision_on_the_merged_subject_is_subject_merged(client, crm, db):
    a, b = await _pair(client, crm)
    assert (await _merge(client, crm, a["id"], b["id"])).status_code == 200
    single = await _decide(client, crm, b["id"], "business_development")
    assert single["allowed"] is False and single["reasons"] == ["subject_merged"]
    assert single["merged_into"] == a["id"] and single["basis"] is None
    by_email = await client.post(
        "/v1/decisions", json={"email": b["email"], "purpose": "surveys"}, headers=crm
    )
    assert by_email.json()["reasons"] == ["subject_merged"]
    batch = await client.post(
        "/v1/decisions/batch",
        json={"purpose": "business_development", "subjects": [a["id"], b["id"]]},
        headers=crm,
    )
    items = batch.json()["items"]
    assert items[0]["allowed"] is True and items[0]["merged_into"] is None
    assert items[1]["reasons"] == ["subject_merged"] and items[1]["merged_into"] == a["id"]
    (stored,) = await _rows(
        db, "SELECT reasons FROM decisions WHERE id = :id", id=uuid.UUID(single["id"])
    )
    assert stored["reasons"] == ["subject_merged"]


async def test_audit_and_change_feed(client, crm, db):
    a, b = await _pair(client, crm)
    assert (await _merge(client, crm, a["id"], b["id"])).status_code == 200
    audit = await _rows(
        db,
        "SELECT action, entity_id, digest FROM audit_entries"
        " WHERE action IN ('subject.merge', 'subject.merged') ORDER BY id",
    )
    assert [(e["action"], e["entity_id"]) for e in audit] == [
        ("subject.merge", a["id"]),
        ("subject.merged", b["id"]),
    ]
    assert audit[0]["digest"]["merged"] == b["id"]
    assert audit[1]["digest"]["merged_into"] == a["id"]
    feed = await _rows(
        db,
        "SELECT kind, subject_id, email_hash, purpose FROM changes"
        " WHERE subject_id = ANY(:ids) ORDER BY id DESC LIMIT 2",
        ids=[uuid.UUID(a["id"]), uuid.UUID(b["id"])],
    )
    assert (feed[1]["kind"], feed[1]["subject_id"]) == ("subject.merged", uuid.UUID(b["id"]))
    assert feed[1]["email_hash"] == gs.email_hash(b["email"])
    assert (feed[0]["kind"], feed[0]["subject_id"]) == ("subject.updated", uuid.UUID(a["id"]))


async def _unchanged(db, *ids: str) -> list[dict[str, Any]]:
    return await _rows(
        db,
        "SELECT id, merged_into, updated_at FROM subjects WHERE id = ANY(:ids) ORDER BY id",
        ids=[uuid.UUID(i) for i in ids],
    ) + await _rows(
        db, "SELECT count(*) AS n FROM audit_entries WHERE action LIKE 'subject.merge%'"
    )


async def test_each_refusal_is_409_with_a_reason_and_changes_nothing(client, crm, db):
    a, b, c = [await _subject(client, crm) for _ in range(3)]
    gone, held = await _subject(client, crm), await _subject(client, crm)
    await db.execute(text("UPDATE subjects SET erased_at = now(), email = NULL WHERE id = :id"),
                     {"id": uuid.UUID(gone["id"])})  # fmt: skip
    await db.execute(text("UPDATE subjects SET restricted = true WHERE id = :id"),
                     {"id": uuid.UUID(held["id"])})  # fmt: skip
    cases = [
        (a["id"], a["id"], "same_subject"),
        (a["id"], gone["id"], "subject_erased"),
        (gone["id"], a["id"], "subject_erased"),
        (a["id"], held["id"], "restricted"),
        (held["id"], a["id"], "restricted"),
    ]
    for into, from_, reason in cases:
        before = await _unchanged(db, a["id"], gone["id"], held["id"])
        r = await _merge(client, crm, into, from_)
        assert r.status_code == 409, (reason, r.text)
        assert r.json()["reason"] == reason
        assert await _unchanged(db, a["id"], gone["id"], held["id"]) == before
    assert (await _merge(client, crm, a["id"], b["id"])).status_code == 200
    for into, from_ in ((b["id"], c["id"]), (c["id"], b["id"])):  # into / from a merged one
        before = await _unchanged(db, a["id"], b["id"], c["id"])
        r = await _merge(client, crm, into, from_)
        assert r.status_code == 409 and r.json()["reason"] == "subject_merged", r.text
        assert r.json()["merged_into"] == a["id"]
        assert await _unchanged(db, a["id"], b["id"], c["id"]) == before
    unknown = await _merge(client, crm, a["id"], str(uuid.uuid4()))
    assert unknown.status_code == 404


async def test_an_open_erasure_request_on_either_refuses(client, crm, db):
    a, b = await _subject(client, crm), await _subject(client, crm)
    r = await client.post(
        "/v1/rights-requests", json={"type": "erasure", "subject_id": b["id"]}, headers=crm
    )
    assert r.status_code == 201, r.text
    before = await _unchanged(db, a["id"], b["id"])
    for into, from_ in ((a["id"], b["id"]), (b["id"], a["id"])):
        refused = await _merge(client, crm, into, from_)
        assert refused.status_code == 409 and refused.json()["reason"] == "erasure_requested"
    assert await _unchanged(db, a["id"], b["id"]) == before


async def test_a_survivor_merged_again_carries_everything_merged_into_it(client, crm, db):
    a, b = await _pair(client, crm)
    c = await _subject(client, crm)
    assert (await _merge(client, crm, a["id"], b["id"])).status_code == 200
    assert (await _merge(client, crm, c["id"], a["id"])).status_code == 200
    events = (await client.get(f"/v1/consent-events?subject_id={c['id']}", headers=crm)).json()
    owners = {e["subject_id"] for e in events["items"]}
    assert owners == {a["id"], b["id"]}
    assert (await _decide(client, crm, c["id"], "business_development"))["allowed"] is True


async def test_idempotency_key_replays_the_first_answer(client, crm, db):
    a, b = await _pair(client, crm)
    key = {"Idempotency-Key": f"merge-{uuid.uuid4()}"}
    first = await _merge(client, crm, a["id"], b["id"], **key)
    again = await _merge(client, crm, a["id"], b["id"], **key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    (n,) = await _rows(db, "SELECT count(*) AS n FROM audit_entries WHERE action = 'subject.merge'")
    assert n["n"] == 1
    other = await _merge(client, crm, a["id"], str(uuid.uuid4()), **key)
    assert other.status_code == 422


async def test_writes_to_the_merged_subject_are_refused_naming_the_survivor(client, crm, db):
    """Reads of the merged subject follow the link; a write landing on it would be hidden
    behind the survivor, so each is a 409 naming where to write, and stores nothing."""
    a, b = await _subject(client, crm), await _subject(client, crm)
    assert (await _merge(client, crm, a["id"], b["id"])).status_code == 200
    before = await _ledger(db, b["id"])
    writes = [
        ("post", "/v1/consent-events", give(b["id"], purpose="content_subscriptions")),
        ("put", f"/v1/subjects/{b['id']}/bases/surveys", {"basis": "consent"}),
        ("patch", f"/v1/subjects/{b['id']}", {"name": "Someone Else"}),
        ("post", "/v1/rights-requests", {"type": "access", "subject_id": b["id"]}),
        ("post", f"/v1/subjects/{b['id']}/links", {"purpose": "content_subscriptions"}),
    ]
    for method, path, body in writes:
        r = await client.request(method, path, json=body, headers=crm)
        assert r.status_code == 409, (path, r.text)
        assert r.json().get("merged_into") == a["id"], (path, r.json())
    assert await _ledger(db, b["id"]) == before
    name = await _rows(db, "SELECT name FROM subjects WHERE id = :i", i=uuid.UUID(b["id"]))
    assert name[0]["name"] != "Someone Else"


async def test_erasing_the_survivor_erases_the_subject_merged_into_it(client, crm, db):
    a, b = await _subject(client, crm), await _subject(client, crm)
    assert (await _merge(client, crm, a["id"], b["id"])).status_code == 200
    r = await client.post(
        "/v1/rights-requests", json={"type": "erasure", "subject_id": a["id"]}, headers=crm
    )
    req = r.json()
    r = await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "email"}, headers=crm
    )
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/rights-requests/{req['id']}/complete", json={}, headers=crm)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"]["merged_subjects"] == [b["id"]]
    rows = await _rows(
        db,
        "SELECT id, email, name, erased_at FROM subjects WHERE id = ANY(:ids)",
        ids=[uuid.UUID(a["id"]), uuid.UUID(b["id"])],
    )
    assert len(rows) == 2
    assert all(r["erased_at"] is not None and r["email"] is None for r in rows), rows
