"""Idempotency-Key: replay, conflicting replay, concurrency; and a change feed that never
skips a late commit. These tests commit for real (unique data, no rollback)."""

import asyncio
import uuid

import httpx
from sqlalchemy import text

from app.main import create_app
from app.services.access import api_keys
from app.services.changes import feed as changes
from tests.conftest import new_subject
from tests.test_consent import give


async def test_same_key_same_body_replays_the_first_answer(client, crm, db):
    headers = {**crm, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = new_subject()
    first = await client.post("/v1/subjects", json=body, headers=headers)
    second = await client.post("/v1/subjects", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    count = (
        await db.execute(
            text("SELECT count(*) FROM subjects WHERE email = :e"), {"e": body["email"]}
        )
    ).scalar()
    assert count == 1
    other = await client.post("/v1/subjects", json=new_subject(), headers=headers)
    assert other.status_code == 422 and "different request" in other.json()["detail"]


async def test_keys_belong_to_one_api_key(client, crm, make_key):
    key = f"k-{uuid.uuid4()}"
    other_crm = await make_key("crm")
    a = await client.post(
        "/v1/subjects", json=new_subject(), headers={**crm, "Idempotency-Key": key}
    )
    b = await client.post(
        "/v1/subjects", json=new_subject(), headers={**other_crm, "Idempotency-Key": key}
    )
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


async def test_a_failed_request_does_not_burn_the_key(client, crm):
    headers = {**crm, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = new_subject(category="nope")
    assert (await client.post("/v1/subjects", json=body, headers=headers)).status_code == 422
    body["category"] = "prospect"
    assert (await client.post("/v1/subjects", json=body, headers=headers)).status_code == 201


async def test_50_concurrent_duplicates_make_one_consent_event(engine, test_settings):
    app = create_app(test_settings, engine=engine)
    async with app.state.sessionmaker() as session:
        key = await api_keys.create_key(session, name=f"idem-{uuid.uuid4().hex[:6]}", role="crm")
        await session.commit()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        subject = (await c.post("/v1/subjects", json=new_subject(), headers=headers)).json()
        idem = {**headers, "Idempotency-Key": f"k-{uuid.uuid4()}"}
        body = give(subject["id"])
        responses = await asyncio.gather(
            *(c.post("/v1/consent-events", json=body, headers=idem) for _ in range(50))
        )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    async with app.state.sessionmaker() as session:
        n = (
            await session.execute(
                text("SELECT count(*) FROM consent_events WHERE subject_id = :s"),
                {"s": subject["id"]},
            )
        ).scalar()
    assert n == 1


async def test_change_feed_waits_for_a_late_lower_seq_instead_of_skipping_it(engine, test_settings):
    app = create_app(test_settings, engine=engine)
    maker = app.state.sessionmaker
    async with maker() as reader:
        start = (await changes.read(reader, after=0, limit=1000)).next_after
        while True:  # drain whatever earlier tests left
            page = await changes.read(reader, after=start, limit=1000)
            if not page.items:
                break
            start = page.next_after
    slow, fast = maker(), maker()
    try:
        await changes.append(slow, "test.slow", subject_id=None, email_hash=None)  # lower seq
        await changes.append(fast, "test.fast", subject_id=None, email_hash=None)
        await fast.commit()
        async with maker() as reader:
            early = await changes.read(reader, after=start, limit=100)
            await reader.commit()
        # The committed entry gets the next position; the running one none yet...
        assert [c.kind for c in early.items] == ["test.fast"]
        await slow.commit()
        async with maker() as reader:
            later = await changes.read(reader, after=early.next_after, limit=100)
            await reader.commit()
        # ...and the late commit a position after it: seen, not skipped.
        assert [c.kind for c in later.items] == ["test.slow"]
    finally:
        await slow.close()
        await fast.close()


async def test_a_key_older_than_24_hours_may_be_used_afresh(client, crm, db):
    key = f"k-{uuid.uuid4()}"
    headers = {**crm, "Idempotency-Key": key}
    first = await client.post("/v1/subjects", json=new_subject(), headers=headers)
    await db.execute(
        text("UPDATE idempotency_keys SET created_at = now() - interval '23 hours' WHERE key = :k"),
        {"k": key},
    )
    await db.commit()
    within = await client.post("/v1/subjects", json=new_subject(), headers=headers)
    assert within.status_code == 422  # still remembered, other body
    await db.execute(
        text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = :k"),
        {"k": key},
    )
    await db.commit()
    later = await client.post("/v1/subjects", json=new_subject(), headers=headers)
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]
