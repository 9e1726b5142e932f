"""The gate's clock (app/services/changes/clock.py): each instant at which time alone changes
the gate's answer is recorded by the write that creates it, moved or removed by the writes
that move or withdraw it, and fed to the change feed once, when an injected `now` passes it,
also after a stop across several of them; two runs at once still feed each one once; and the
MailChimp worker drops the person once the clock has fed the entry."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import text

from app.background import clock_tick
from app.core.config import use_settings
from app.core.db import create_sessionmaker
from app.services.access import api_keys
from app.services.changes import clock
from app.services.gate.decisions import decide
from tests.conftest import new_subject
from tests.sync_support import (  # noqa: F401
    allowed_subject,
    committed_engine,
    committed_url,
    live,
    serve,
)
from tests.test_decisions import CRM
from tests.test_sync_mailchimp import LIST, fake, md5, run_once, worker_for  # noqa: F401

KINDS = ("contract.ended", "contract.started", "interest.ceased", "retention.due")
TICK = timedelta(microseconds=1)
FAR = datetime(2300, 1, 1, tzinfo=UTC)


async def _subject(client, crm, **fields):
    r = await client.post("/v1/subjects", json=new_subject(**fields), headers=crm)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _contract(client, crm, sid, purpose="account_management", **dates):
    body = {"basis": "contract", "contract_ref": "C-1", **dates}
    r = await client.put(f"/v1/subjects/{sid}/bases/{purpose}", json=body, headers=crm)
    assert r.status_code == 200, r.text


async def _moments(db, sid):
    rows = await db.execute(
        text(
            "SELECT kind, purpose, due_at, fed_at FROM gate_moments WHERE subject_id = :s"
            " ORDER BY due_at, kind"
        ),
        {"s": sid},
    )
    return {(r.kind, r.purpose): r for r in rows}


async def _fed(db, sid):
    """The clock's change-feed entries for the subject: (kind, purpose, at), in order."""
    rows = await db.execute(
        text(
            "SELECT kind, purpose, at FROM changes WHERE subject_id = :s"
            " AND kind = ANY(:k) ORDER BY id"
        ),
        {"s": sid, "k": list(KINDS)},
    )
    return [tuple(r) for r in rows]


async def _reasons(db, sid, purpose, now):
    return (await decide(db, CRM, subject=uuid.UUID(sid), purpose=purpose, now=now)).reasons


async def test_a_contract_end_is_fed_once_when_it_passes_and_agrees_with_the_gate(client, crm, db):
    sid = await _subject(client, crm)
    await _contract(client, crm, sid, contract_end="2031-01-31")
    moments = await _moments(db, sid)
    end = moments[("contract.ended", "account_management")].due_at
    retention = moments[("retention.due", None)].due_at  # customer contact: end + 6 years
    assert end == datetime(2031, 2, 1, tzinfo=UTC) and retention == datetime(2037, 2, 1, tzinfo=UTC)
    # The instants are the gate's: one tick before, the answer is still the old one.
    assert "contract_ended" not in await _reasons(db, sid, "account_management", end - TICK)
    assert "contract_ended" in await _reasons(db, sid, "account_management", end)
    assert "retention_expired" not in await _reasons(
        db, sid, "account_management", retention - TICK
    )
    assert "retention_expired" in await _reasons(db, sid, "account_management", retention)

    await clock.feed_due(db, now=end - TICK)
    assert await _fed(db, sid) == []  # not before
    await clock.feed_due(db, now=end)
    await clock.feed_due(db, now=end + timedelta(days=1))
    assert await _fed(db, sid) == [("contract.ended", "account_management", end)]  # once
    assert (await _moments(db, sid))[("contract.ended", "account_management")].fed_at == end
    await clock.feed_due(db, now=retention)
    assert [k for k, *_ in await _fed(db, sid)] == ["contract.ended", "retention.due"]


async def test_a_moved_contract_end_is_armed_again_and_an_ended_basis_removes_it(client, crm, db):
    sid = await _subject(client, crm)
    await _contract(client, crm, sid, contract_end="2031-01-31")
    first = datetime(2031, 2, 1, tzinfo=UTC)
    await clock.feed_due(db, now=first)
    await _contract(client, crm, sid, contract_end="2032-01-31")  # renewed
    row = (await _moments(db, sid))[("contract.ended", "account_management")]
    later = datetime(2032, 2, 1, tzinfo=UTC)
    assert row.due_at == later and row.fed_at is None
    await _contract(client, crm, sid, contract_end="2032-01-31")  # the same again: no change
    assert (await _moments(db, sid))[("contract.ended", "account_management")].due_at == later
    await clock.feed_due(db, now=later - TICK)
    assert len(await _fed(db, sid)) == 1
    assert (
        await client.delete(f"/v1/subjects/{sid}/bases/account_management", headers=crm)
    ).status_code == 204
    moments = await _moments(db, sid)
    assert ("contract.ended", "account_management") not in moments
    # The contract ended now (its history says so): retention counts 6 years from today.
    assert moments[("retention.due", None)].due_at < later + timedelta(days=6 * 366)
    await clock.feed_due(db, now=later)
    assert [k for k, *_ in await _fed(db, sid)] == ["contract.ended"]  # no stale entry


async def test_a_contract_start_to_come_is_a_moment(client, crm, db):
    sid = await _subject(client, crm)
    await _contract(client, crm, sid, contract_start="2031-01-01", contract_end="2032-01-31")
    start = (await _moments(db, sid))[("contract.started", "account_management")].due_at
    assert "contract_ended" in await _reasons(db, sid, "account_management", start - TICK)
    assert await _reasons(db, sid, "account_management", start) == []
    await clock.feed_due(db, now=start)
    assert [k for k, *_ in await _fed(db, sid)] == ["contract.started"]


async def test_interest_ceased_plus_grace_is_recorded_moved_and_removed(
    client, crm, db, test_settings
):
    sid = await _subject(client, crm, category="prospect")
    assert await _moments(db, sid) == {}  # interest not ceased: no due date
    url, ceased = f"/v1/subjects/{sid}", datetime(2031, 3, 1, 12, tzinfo=UTC)
    r = await client.patch(url, json={"interest_ceased_at": ceased.isoformat()}, headers=crm)
    assert r.status_code == 200, r.text
    assert (await _moments(db, sid))[("interest.ceased", None)].due_at == ceased  # grace 0
    # With a grace period (the setting the gate reads), the moment is that much later.
    use_settings(test_settings.model_copy(update={"retention_prospect_grace_days": 10}))
    await clock.schedule(db, [sid])
    due = (await _moments(db, sid))[("interest.ceased", None)].due_at
    assert due == ceased + timedelta(days=10)
    use_settings(test_settings)
    await clock.schedule(db, [sid])
    moved = ceased + timedelta(days=1)
    r = await client.patch(url, json={"interest_ceased_at": moved.isoformat()}, headers=crm)
    assert (await _moments(db, sid))[("interest.ceased", None)].due_at == moved
    await clock.feed_due(db, now=ceased)
    assert await _fed(db, sid) == []
    await clock.feed_due(db, now=moved)
    assert await _fed(db, sid) == [("interest.ceased", None, moved)]
    assert "retention_expired" in await _reasons(db, sid, "surveys", moved)
    r = await client.patch(url, json={"interest_ceased_at": None}, headers=crm)
    assert r.status_code == 200, r.text
    assert await _moments(db, sid) == {}


async def test_a_retention_rule_change_moves_the_category_s_due_dates(client, crm, admin, db):
    sid = await _subject(client, crm, category="visitor")  # fixed period from creation
    before = (await _moments(db, sid))[("retention.due", None)].due_at
    r = await client.put(
        "/v1/retention-rules/visitor", json={"rule": "fixed_period", "months": 36}, headers=admin
    )
    assert r.status_code == 200, r.text
    after = (await _moments(db, sid))[("retention.due", None)].due_at
    assert before + timedelta(days=360) < after < before + timedelta(days=370)
    assert "retention_expired" in await _reasons(db, sid, "surveys", after)
    assert "retention_expired" not in await _reasons(db, sid, "surveys", after - TICK)


async def test_an_erased_subject_has_no_moment_left(client, crm, db):
    sid = await _subject(client, crm, category="visitor")
    assert await _moments(db, sid)
    req = (
        await client.post(
            "/v1/rights-requests", json={"type": "erasure", "subject_id": sid}, headers=crm
        )
    ).json()
    await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "email"}, headers=crm
    )
    r = await client.post(f"/v1/rights-requests/{req['id']}/complete", json={}, headers=crm)
    assert r.status_code == 200, r.text
    assert await _moments(db, sid) == {}
    await clock.feed_due(db, now=FAR)
    assert await _fed(db, sid) == []


async def test_a_stop_across_several_moments_catches_up_each_once(client, crm, db):
    a = await _subject(client, crm)
    await _contract(client, crm, a, contract_end="2031-01-31")
    await _contract(client, crm, a, purpose="contractual_communications", contract_end="2033-06-30")
    b = await _subject(client, crm, category="prospect")
    r = await client.patch(
        f"/v1/subjects/{b}", json={"interest_ceased_at": "2032-05-05"}, headers=crm
    )
    assert r.status_code == 200, r.text
    c = await _subject(client, crm, category="visitor")
    # The service was stopped across all of them: the first run after it feeds each once.
    await clock.feed_due(db, now=FAR)
    await clock.feed_due(db, now=FAR + timedelta(days=1))
    fed_a = await _fed(db, a)
    assert [(k, p) for k, p, _ in fed_a] == [
        ("contract.ended", "account_management"),
        ("contract.ended", "contractual_communications"),
        ("retention.due", None),
    ]
    assert [at for *_, at in fed_a] == sorted(at for *_, at in fed_a)  # in the order they passed
    assert [k for k, *_ in await _fed(db, b)] == ["interest.ceased"]
    assert [k for k, *_ in await _fed(db, c)] == ["retention.due"]
    for sid in (a, b, c):
        assert all(m.fed_at == FAR for m in (await _moments(db, sid)).values())
    assert await clock.pending(db, now=FAR) == 0


async def test_the_import_records_its_subjects_moments(client, crm, db):
    line = new_subject()
    line["bases"] = [
        {
            "purpose": "account_management",
            "basis": "contract",
            "contract_ref": "C-1",
            "contract_end": "2031-01-31",
        }
    ]
    r = await client.post(
        "/v1/subjects/import",
        content=orjson.dumps(line) + b"\n",
        headers={**crm, "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200 and r.json()["imported"] == 1, r.text
    sid = (
        await db.execute(text("SELECT id FROM subjects WHERE email = :e"), {"e": line["email"]})
    ).scalar_one()
    moments = await _moments(db, sid)
    assert moments[("contract.ended", "account_management")].due_at == datetime(
        2031, 2, 1, tzinfo=UTC
    )
    assert moments[("retention.due", None)].due_at == datetime(2037, 2, 1, tzinfo=UTC)


# --- committed data: two clocks at once, and the MailChimp worker -------------------------


async def _committed_moments(live, n):
    for _ in range(n):
        r = await live.post("/v1/subjects", json=new_subject(), headers=live.crm)
        sid = r.json()["id"]
        body = {"basis": "contract", "contract_ref": "C", "contract_end": "2031-01-31"}
        r = await live.put(
            f"/v1/subjects/{sid}/bases/account_management", json=body, headers=live.crm
        )
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("advisory", [True, False])
async def test_two_clock_runs_at_once_feed_each_moment_once(live, committed_engine, advisory):
    await _committed_moments(live, 20)
    maker = create_sessionmaker(committed_engine)

    async def run():
        async with maker() as session:
            if advisory:
                n = await clock.feed_due(session, now=FAR)
            else:  # without the one-per-database lock: SKIP LOCKED alone keeps it once
                n = (await session.execute(clock.FEED_DUE, {"now": FAR, "batch": 7})).scalar_one()
            await session.commit()
            return n

    done = await asyncio.gather(*(run() for _ in range(4)))
    async with committed_engine.connect() as c:
        moments = (await c.execute(text("SELECT count(*) FROM gate_moments"))).scalar_one()
        counts = (
            await c.execute(
                text(
                    "SELECT count(*) FROM changes WHERE kind = ANY(:k)"
                    " GROUP BY subject_id, purpose, kind"
                ),
                {"k": list(KINDS)},
            )
        ).scalars()
        counts = list(counts)
    if advisory:
        assert sum(done) == moments == 40
        assert len(counts) == moments and set(counts) == {1}
    else:
        assert sum(done) == len(counts) and set(counts) == {1}


async def test_the_worker_drops_a_person_once_the_clock_feeds_their_moment(
    live, fake, worker_for, committed_engine
):
    """Interest ceases tomorrow; the worker has the person subscribed. Two days pass (every
    stored instant moved back two days: the same as waiting): the gate now denies, but
    nothing has told the worker until the clock feeds `interest.ceased`."""
    s = await allowed_subject(live)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    body = {"category": "prospect", "interest_ceased_at": tomorrow}
    r = await live.patch(f"/v1/subjects/{s['id']}", json=body, headers=live.crm)
    assert r.status_code == 200, r.text
    await run_once(worker_for)
    assert fake.statuses(LIST) == {md5(s["email"]): "subscribed"}
    async with committed_engine.begin() as c:
        await c.execute(
            text("UPDATE subjects SET interest_ceased_at = interest_ceased_at - interval '2 days'")
        )
        await c.execute(text("UPDATE gate_moments SET due_at = due_at - interval '2 days'"))
    await run_once(worker_for)
    assert fake.statuses(LIST) == {md5(s["email"]): "subscribed"}  # no entry yet
    async with create_sessionmaker(committed_engine)() as session:
        assert await clock.feed_due(session, now=datetime.now(UTC)) == 1
        await session.commit()
    await run_once(worker_for)
    assert fake.statuses(LIST) == {md5(s["email"]): "unsubscribed"}


async def test_the_gauge_counts_moments_passed_and_not_fed(live, committed_engine):
    """Another worker holds the clock (stuck): nothing is fed and the gauge says how many
    wait; once it lets go, the next run feeds them and the gauge is back to 0."""
    await _committed_moments(live, 3)
    maker = create_sessionmaker(committed_engine)
    async with committed_engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": clock.CLOCK_LOCK})
        assert await clock_tick(maker, now=FAR) == 0
        metrics = (await live.get("/metrics", headers=await _auditor(committed_engine))).text
        assert "consent_api_gate_moments_pending 6.0" in metrics
        await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": clock.CLOCK_LOCK})
    assert await clock_tick(maker, now=FAR) == 6
    metrics = (await live.get("/metrics", headers=await _auditor(committed_engine))).text
    assert "consent_api_gate_moments_pending 0.0" in metrics


async def _auditor(engine):
    async with create_sessionmaker(engine)() as session:
        key = await api_keys.create_key(session, name=f"aud-{uuid.uuid4().hex[:6]}", role="auditor")
        await session.commit()
    return {"Authorization": f"Bearer {key}"}
