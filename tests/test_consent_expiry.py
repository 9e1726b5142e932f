"""Consent that expires (a purpose's `consent_valid_months`), over HTTP against PostgreSQL:
set through the catalogue; a consent older than the period is `consent_expired` in a single
decision, a batch and an audience alike (time moved by moving stored timestamps back, or by
an injected `now`); the gate's clock keeps the instant, moves it on a fresh `given`, drops
it on a withdrawal, recomputes a purpose's when its period changes, and feeds it once; the
refresh report lists who to ask again; the RoPA and the preference page show the period."""

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import text

from app.services.changes import clock
from app.services.gate.decisions import decide
from tests.conftest import new_subject
from tests.test_consent import give
from tests.test_decisions import CRM

PURPOSE = "content_subscriptions"  # consent is its only basis (§9)
TICK = timedelta(microseconds=1)


async def _period(client, admin, months, purpose=PURPOSE):
    purposes = (await client.get("/v1/purposes?limit=1000", headers=admin)).json()["items"]
    entry = next(p for p in purposes if p["key"] == purpose)
    body = {k: entry[k] for k in ("description", "allowed_bases", "direct_marketing")}
    r = await client.put(
        f"/v1/purposes/{purpose}", json={**body, "consent_valid_months": months}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["consent_valid_months"] == months


async def _subject(client, crm):
    r = await client.post("/v1/subjects", json=new_subject(), headers=crm)
    assert r.status_code == 201, r.text
    return r.json()


async def _give(client, crm, sid, at=None, purpose=PURPOSE):
    extra = {"occurred_at": at.isoformat()} if at else {}
    r = await client.post(
        "/v1/consent-events", json=give(sid, purpose=purpose, **extra), headers=crm
    )
    assert r.status_code == 201, r.text
    return r.json()


async def _age(db, sid, months_days):
    """Move the subject's consent back in time: the event and the state, as if given then."""
    for table in ("consent_events", "consent_state"):
        await db.execute(
            text(
                f"UPDATE {table} SET occurred_at = occurred_at - CAST(:d AS interval) WHERE subject_id = :s"
            ),
            {"d": months_days, "s": uuid.UUID(sid)},
        )


async def _moment(db, sid, purpose=PURPOSE):
    return (
        await db.execute(
            text(
                "SELECT due_at, fed_at FROM gate_moments WHERE subject_id = :s"
                " AND purpose = :p AND kind = 'consent.expired'"
            ),
            {"s": uuid.UUID(sid), "p": purpose},
        )
    ).first()


async def test_the_period_is_a_catalogue_setting_stored_and_validated(client, admin, db):
    await _period(client, admin, 24)
    stored = await db.execute(
        text("SELECT consent_valid_months FROM purposes WHERE key = :k"), {"k": PURPOSE}
    )
    assert stored.scalar_one() == 24
    listed = (await client.get("/v1/purposes?limit=1000", headers=admin)).json()["items"]
    assert {p["key"]: p["consent_valid_months"] for p in listed}["email_campaigns"] is None
    bad = await client.put(
        f"/v1/purposes/{PURPOSE}",
        json={
            "description": "x",
            "allowed_bases": ["consent"],
            "direct_marketing": True,
            "consent_valid_months": 0,
        },
        headers=admin,
    )
    assert bad.status_code == 422


async def test_an_expired_consent_is_denied_alike_in_single_batch_and_audience(
    client, admin, crm, make_key, db
):
    sync = await make_key("sync")
    await _period(client, admin, 24)
    s = await _subject(client, crm)
    await _give(client, crm, s["id"])

    async def answers():
        single = await client.post(
            "/v1/decisions", json={"subject_id": s["id"], "purpose": PURPOSE}, headers=crm
        )
        batch = await client.post(
            "/v1/decisions/batch", json={"purpose": PURPOSE, "subjects": [s["id"]]}, headers=crm
        )
        audience = await client.get(f"/v1/audiences/{PURPOSE}?limit=1000", headers=sync)
        assert single.status_code == batch.status_code == audience.status_code == 200
        members = {m["subject_id"] for m in audience.json()["items"]}
        return single.json()["reasons"], batch.json()["items"][0]["reasons"], s["id"] in members

    assert await answers() == ([], [], True)
    await _age(db, s["id"], timedelta(days=2 * 366))  # older than 24 months
    assert await answers() == (["consent_expired"], ["consent_expired"], False)
    stored = await db.execute(
        text(
            "SELECT allowed, reasons FROM decisions WHERE subject_id = :s"
            " ORDER BY decided_at DESC, id DESC LIMIT 2"
        ),
        {"s": uuid.UUID(s["id"])},
    )
    assert [tuple(r) for r in stored] == [(False, ["consent_expired"])] * 2
    # A fresh `given` starts a new period.
    await _give(client, crm, s["id"])
    assert await answers() == ([], [], True)
    # No period, no expiry: the same old consent counts again.
    await _age(db, s["id"], timedelta(days=2 * 366))
    await _period(client, admin, None)
    assert await answers() == ([], [], True)


async def test_the_clock_keeps_moves_drops_and_feeds_the_instant(client, admin, crm, db):
    await _period(client, admin, 24)
    s = await _subject(client, crm)
    given_at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    await _give(client, crm, s["id"], at=given_at)
    due = given_at.replace(year=given_at.year + 2)
    assert (await _moment(db, s["id"])).due_at == due
    # The instant is the gate's: a tick before it, allowed; at it, denied.
    for at, reasons in ((due - TICK, []), (due, ["consent_expired"])):
        decided = await decide(db, CRM, subject=uuid.UUID(s["id"]), purpose=PURPOSE, now=at)
        assert decided.reasons == reasons
    await clock.feed_due(db, now=due - TICK)
    await clock.feed_due(db, now=due)
    await clock.feed_due(db, now=due + timedelta(days=1))
    fed = await db.execute(
        text("SELECT purpose, at FROM changes WHERE subject_id = :s AND kind = 'consent.expired'"),
        {"s": uuid.UUID(s["id"])},
    )
    assert [tuple(r) for r in fed] == [(PURPOSE, due)]  # once
    assert (await _moment(db, s["id"])).fed_at == due
    # A fresh `given` moves it and arms it again; an older, late one moves nothing.
    later = given_at + timedelta(days=10)
    await _give(client, crm, s["id"], at=later)
    row = await _moment(db, s["id"])
    assert row.due_at == later.replace(year=later.year + 2) and row.fed_at is None
    await _give(client, crm, s["id"], at=given_at - timedelta(days=5))
    assert (await _moment(db, s["id"])).due_at == later.replace(year=later.year + 2)
    # A withdrawal removes it.
    r = await client.post(
        "/v1/consent-events",
        json={"subject_id": s["id"], "purpose": PURPOSE, "action": "withdrawn"},
        headers=crm,
    )
    assert r.status_code == 201, r.text
    assert await _moment(db, s["id"]) is None


async def test_a_new_period_recomputes_every_consent_of_the_purpose(client, admin, crm, db):
    s = await _subject(client, crm)
    given_at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    await _give(client, crm, s["id"], at=given_at)
    assert await _moment(db, s["id"]) is None  # no period, no instant
    await _period(client, admin, 12)
    assert (await _moment(db, s["id"])).due_at == given_at.replace(year=given_at.year + 1)
    await _period(client, admin, 6)
    six = given_at.month + 6
    expected = given_at.replace(year=given_at.year + (six - 1) // 12, month=(six - 1) % 12 + 1)
    assert (await _moment(db, s["id"])).due_at == expected
    await _period(client, admin, None)
    assert await _moment(db, s["id"]) is None


async def test_the_import_records_the_instant_too(client, admin, crm, db):
    await _period(client, admin, 24)
    email = f"imp-{uuid.uuid4().hex[:8]}@example.com"
    at = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    line = {
        **new_subject(email=email),
        "consents": [
            {
                "purpose": PURPOSE,
                "action": "given",
                "method": "import",
                "policy_version": "1",
                "notice_text": "Imported consent wording.",
                "occurred_at": at.isoformat(),
            }
        ],
    }
    r = await client.post(
        "/v1/subjects/import",
        content=orjson.dumps(line) + b"\n",
        headers={**crm, "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200 and r.json()["imported"] == 1, r.text
    sid = (
        await db.execute(text("SELECT id FROM subjects WHERE email = :e"), {"e": email})
    ).scalar_one()
    assert (await _moment(db, str(sid))).due_at == datetime(2027, 3, 10, 9, 0, tzinfo=UTC)


async def test_the_refresh_report_lists_consents_running_out_soon(client, admin, crm, auditor, db):
    await _period(client, admin, 24)
    soon, fresh, gone = [await _subject(client, crm) for _ in range(3)]
    for s in (soon, fresh, gone):
        await _give(client, crm, s["id"])
    await _age(db, soon["id"], timedelta(days=2 * 365 - 20))  # runs out in about 20 days
    await _age(db, gone["id"], timedelta(days=2 * 366))  # already ran out
    r = await client.get(
        f"/v1/reports/consent-refresh?purpose={PURPOSE}&within_days=30", headers=crm
    )
    assert r.status_code == 200, r.text
    items = [
        i for i in r.json()["items"] if i["subject_id"] in {soon["id"], fresh["id"], gone["id"]}
    ]
    assert [i["subject_id"] for i in items] == [soon["id"]]
    item = items[0]
    assert item["email"] == soon["email"] and item["purpose"] == PURPOSE
    given_at = datetime.fromisoformat(item["given_at"])
    expires_at = datetime.fromisoformat(item["expires_at"])
    assert expires_at == given_at.replace(year=given_at.year + 2)
    # The auditor reads it too; paging follows the cursor; a fresh `given` leaves the list.
    assert (await client.get("/v1/reports/consent-refresh", headers=auditor)).status_code == 200
    await _age(db, fresh["id"], timedelta(days=2 * 365 - 25))
    first = (
        await client.get(f"/v1/reports/consent-refresh?purpose={PURPOSE}&limit=1", headers=crm)
    ).json()
    assert first["next_cursor"] is not None
    rest = await client.get(
        f"/v1/reports/consent-refresh?purpose={PURPOSE}&limit=1000&cursor={first['next_cursor']}",
        headers=crm,
    )
    ours = {i["subject_id"] for i in first["items"] + rest.json()["items"]}
    assert {soon["id"], fresh["id"]} <= ours
    await _give(client, crm, soon["id"])
    again = await client.get(f"/v1/reports/consent-refresh?purpose={PURPOSE}", headers=crm)
    assert soon["id"] not in {i["subject_id"] for i in again.json()["items"]}
    bad = await client.get("/v1/reports/consent-refresh?within=30", headers=crm)
    assert bad.status_code == 422


async def test_the_ropa_and_the_preference_page_show_the_period(client, admin, auditor, crm, db):
    await _period(client, admin, 24)
    ropa = (await client.get("/v1/reports/processing-activities", headers=auditor)).json()
    by_key = {p["key"]: p for p in ropa["purposes"]}
    assert by_key[PURPOSE]["consent_valid_months"] == 24
    assert by_key["email_campaigns"]["consent_valid_months"] is None
    html = await client.get(
        "/v1/reports/processing-activities", headers={**auditor, "Accept": "text/html"}
    )
    assert "24 months from when it is given" in html.text
    s = await _subject(client, crm)
    await _give(client, crm, s["id"])
    links = await client.post(f"/v1/subjects/{s['id']}/links", json={}, headers=crm)
    page_path = "/" + links.json()["preference_url"].split("/", 3)[3]
    page = await client.get(page_path)
    assert page.status_code == 200
    assert "Your consent lasts 24 months." in page.text and "It runs until" in page.text
    await _age(db, s["id"], timedelta(days=2 * 366))
    page = await client.get(page_path)
    assert "It ran out on" in page.text and "I agree" in page.text
