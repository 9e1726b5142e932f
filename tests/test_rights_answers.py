"""Every answer about a rights request carries it with its history, exactly as the GET shows
it and as the database holds it; the list filters by subject (API.md "Rights requests")."""

import uuid
from datetime import datetime

from sqlalchemy import text

from tests.conftest import new_subject


async def _subject(client, crm):
    r = await client.post("/v1/subjects", json=new_subject(), headers=crm)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _create(client, headers, **body):
    r = await client.post("/v1/rights-requests", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


async def _stored_history(db, request_id):
    rows = await db.execute(
        text(
            "SELECT action, actor, at FROM rights_request_events WHERE request_id = :r ORDER BY id"
        ),
        {"r": request_id},
    )
    return [(r.action, r.actor, r.at) for r in rows]


async def _same_as_get_and_db(client, crm, db, answer, actions):
    """The answer is the GET's document, and its history is the database's rows."""
    shown = await client.get(f"/v1/rights-requests/{answer['id']}", headers=crm)
    assert shown.status_code == 200
    assert answer == shown.json()
    assert [h["action"] for h in answer["history"]] == actions
    stored = await _stored_history(db, answer["id"])
    assert [
        (h["action"], h["actor"], datetime.fromisoformat(h["at"])) for h in answer["history"]
    ] == stored


async def _act(client, crm, request_id, action, body=None):
    r = await client.post(
        f"/v1/rights-requests/{request_id}/{action}", json=body or {}, headers=crm
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_every_answer_carries_the_history_the_get_shows(client, crm, db):
    sid = await _subject(client, crm)
    # A date alone (the start of that day, UK time): the answer and the GET must agree.
    today = datetime.now().date().isoformat()
    req = await _create(client, crm, type="access", subject_id=sid, received_at=today)
    await _same_as_get_and_db(client, crm, db, req, ["received"])
    rid = req["id"]
    steps = [
        ("verify-identity", {"method": "document"}, "identity_verified"),
        ("extend", {"months": 1, "reason": "complex request"}, "extended"),
        ("pause", {"reason": "awaiting_clarification", "note": "asked"}, "paused"),
        ("resume", None, "resumed"),
        ("complete", {}, "completed"),
    ]
    actions = ["received"]
    for action, body, recorded in steps:
        answer = await _act(client, crm, rid, action, body)
        actions.append(recorded)
        await _same_as_get_and_db(client, crm, db, answer, actions)
    assert "asked" not in str(answer["history"])  # a pause note stays private

    other = await _create(client, crm, type="erasure", subject_id=sid)
    rejected = await _act(client, crm, other["id"], "reject", {"reason": "not our data"})
    await _same_as_get_and_db(client, crm, db, rejected, ["received", "rejected"])


async def test_a_replayed_create_carries_the_history_too(client, crm, db):
    sid = await _subject(client, crm)
    headers = {**crm, "Idempotency-Key": uuid.uuid4().hex}
    first = await _create(client, headers, type="access", subject_id=sid)
    again = await _create(client, headers, type="access", subject_id=sid)
    assert again == first and [h["action"] for h in first["history"]] == ["received"]
    await _same_as_get_and_db(client, crm, db, first, ["received"])


async def test_the_website_creates_and_gets_the_history(client, crm, make_key, db):
    website = await make_key("website")
    sid = await _subject(client, crm)
    req = await _create(client, website, type="object_marketing", subject_id=sid)
    await _same_as_get_and_db(client, crm, db, req, ["received"])


async def _listed(client, crm, **params):
    r = await client.get("/v1/rights-requests", params=params, headers=crm)
    assert r.status_code == 200, r.text
    return r.json()


async def test_the_list_filters_by_subject_and_combines_filters(client, crm, db):
    ada, bob = await _subject(client, crm), await _subject(client, crm)
    a1 = await _create(client, crm, type="access", subject_id=ada)
    a2 = await _create(client, crm, type="erasure", subject_id=ada)
    b1 = await _create(client, crm, type="access", subject_id=bob)
    await _create(client, crm, type="access", email=f"nobody-{uuid.uuid4().hex[:8]}@example.com")
    await _act(client, crm, a2["id"], "reject", {"reason": "duplicate"})

    page = await _listed(client, crm, subject_id=ada, limit=1000)
    assert [i["id"] for i in page["items"]] == [a1["id"], a2["id"]]
    assert {i["subject_id"] for i in page["items"]} == {ada}
    for item in page["items"]:  # each item as the GET shows it, history included
        assert item == (await client.get(f"/v1/rights-requests/{item['id']}", headers=crm)).json()
    assert [i["id"] for i in (await _listed(client, crm, subject_id=bob))["items"]] == [b1["id"]]
    combined = await _listed(client, crm, subject_id=ada, type="erasure", status="rejected")
    assert [i["id"] for i in combined["items"]] == [a2["id"]]
    assert (await _listed(client, crm, subject_id=bob, status="rejected"))["items"] == []
    assert (await _listed(client, crm, subject_id=str(uuid.uuid4())))["items"] == []
    # Pages of one subject's requests.
    first = await _listed(client, crm, subject_id=ada, limit=1)
    assert [i["id"] for i in first["items"]] == [a1["id"]] and first["next_cursor"]
    second = await _listed(client, crm, subject_id=ada, limit=1, cursor=first["next_cursor"])
    assert [i["id"] for i in second["items"]] == [a2["id"]] and second["next_cursor"] is None
    stored = await db.execute(
        text("SELECT count(*) FROM rights_requests WHERE subject_id = :s"), {"s": ada}
    )
    assert stored.scalar_one() == 2


async def test_a_misspelt_subject_filter_is_refused_not_widened(client, crm):
    sid = await _subject(client, crm)
    await _create(client, crm, type="access", subject_id=sid)
    r = await client.get("/v1/rights-requests", params={"subjectid": sid}, headers=crm)
    assert r.status_code == 422
    assert "'subjectid'" in r.json()["detail"] and "subject_id" in r.json()["detail"]
    bad = await client.get("/v1/rights-requests", params={"subject_id": "nope"}, headers=crm)
    assert bad.status_code == 422


async def test_an_index_serves_the_subject_filter(db):
    """ix_rights_requests_subject (migration 0004) finds one subject's requests; the few
    found are then sorted. With sequential scans off, the planner must be able to use it."""
    await db.execute(text("SET LOCAL enable_seqscan = off"))
    plan = await db.execute(
        text(
            "EXPLAIN SELECT * FROM rights_requests WHERE subject_id = :s"
            " ORDER BY received_at, id LIMIT 101"
        ),
        {"s": uuid.uuid4()},
    )
    assert "ix_rights_requests_subject" in "\n".join(r[0] for r in plan)
