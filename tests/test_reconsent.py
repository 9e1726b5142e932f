"""Re-consent on a policy change: consents under an earlier version stop counting for the
named purposes, the gate says `consent_outdated`, a new consent allows again, and the
report lists who must be asked."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from app.services.gate.decisions import decide
from tests.conftest import new_subject
from tests.test_consent import give
from tests.test_decisions import CRM

SHA = "b" * 64


async def _consenting(client, crm, purposes=("content_subscriptions",), version="1"):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    for purpose in purposes:
        r = await client.put(
            f"/v1/subjects/{s['id']}/bases/{purpose}", json={"basis": "consent"}, headers=crm
        )
        assert r.status_code in (200, 201), r.text
        r = await client.post(
            "/v1/consent-events",
            json=give(s["id"], purpose=purpose, policy_version=version),
            headers=crm,
        )
        assert r.status_code == 201, r.text
    return s


async def _decide(client, crm, sid, purpose, recipient=None):
    body = {"subject_id": sid, "purpose": purpose}
    if recipient:
        body["recipient"] = recipient
    r = await client.post("/v1/decisions", json=body, headers=crm)
    assert r.status_code == 200, r.text
    return r.json()


async def _policy(client, admin, version, purposes, **extra):
    body = {"version": version, "text_sha256": SHA, "reconsent_purposes": purposes, **extra}
    r = await client.post("/v1/policies", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


async def _report(client, headers, purpose=None, **params):
    query = {"limit": 1000, **({"purpose": purpose} if purpose else {}), **params}
    r = await client.get("/v1/reports/reconsent", params=query, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_outdated_consent_is_denied_until_given_again(client, crm, admin, auditor, db):
    s = await _consenting(client, crm, ("content_subscriptions", "surveys"))
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["allowed"] is True
    v2 = await _policy(client, admin, "2", ["content_subscriptions"])
    assert v2["reconsent_purposes"] == ["content_subscriptions"]
    stored = (
        await db.execute(text("SELECT reconsent_purposes FROM policies WHERE version = '2'"))
    ).scalar_one()
    assert stored == ["content_subscriptions"]

    denied = await _decide(client, crm, s["id"], "content_subscriptions")
    assert denied["allowed"] is False and denied["reasons"] == ["consent_outdated"]
    row = (
        await db.execute(
            text("SELECT allowed, reasons FROM decisions WHERE id = :i"), {"i": denied["id"]}
        )
    ).one()
    assert row.allowed is False and row.reasons == ["consent_outdated"]
    # A purpose the new version does not name keeps its consent.
    assert (await _decide(client, crm, s["id"], "surveys"))["allowed"] is True

    report = await _report(client, crm, "content_subscriptions")
    mine = [i for i in report["items"] if i["subject_id"] == s["id"]]
    assert len(mine) == 1
    assert mine[0]["email"] == s["email"] and mine[0]["policy_version"] == "1"
    assert mine[0]["asked_by_version"] == "2" and mine[0]["purpose"] == "content_subscriptions"
    assert mine[0]["marketing_opt_out"] is False and mine[0]["restricted"] is False
    assert s["id"] not in {
        i["subject_id"] for i in (await _report(client, auditor, "surveys"))["items"]
    }

    # Consenting again under the old wording does not help; under version 2 it does.
    r = await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
    assert r.status_code == 201
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["reasons"] == [
        "consent_outdated"
    ]
    r = await client.post("/v1/consent-events", json=give(s["id"], policy_version="2"), headers=crm)
    assert r.status_code == 201
    again = await _decide(client, crm, s["id"], "content_subscriptions")
    assert again["allowed"] is True and again["reasons"] == []
    report = await _report(client, crm, "content_subscriptions")
    assert s["id"] not in {i["subject_id"] for i in report["items"]}


async def test_a_version_in_the_future_counts_from_its_publication(client, crm, admin, db):
    s = await _consenting(client, crm)
    published = datetime.now(UTC) + timedelta(days=7)
    await _policy(
        client, admin, "2027-q1", ["content_subscriptions"], published_at=published.isoformat()
    )
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["allowed"] is True
    assert s["id"] not in {
        i["subject_id"] for i in (await _report(client, crm, "content_subscriptions"))["items"]
    }
    sid = uuid.UUID(s["id"])
    before = await decide(
        db, CRM, subject=sid, purpose="content_subscriptions", now=published - timedelta(seconds=1)
    )
    after = await decide(db, CRM, subject=sid, purpose="content_subscriptions", now=published)
    assert before.reasons == [] and after.reasons == ["consent_outdated"]


async def test_versions_are_ordered_by_publication_not_by_name(client, crm, admin, db):
    # "0.9" is published after "2", so a consent under "0.9" is not outdated by "2"; and
    # a consent under "2" is outdated by a later "0.9" that asks again.
    now = datetime.now(UTC)
    await _policy(
        client,
        admin,
        "2",
        ["content_subscriptions"],
        published_at=(now - timedelta(hours=2)).isoformat(),
    )
    await _policy(client, admin, "0.9", [], published_at=(now - timedelta(hours=1)).isoformat())
    s = await _consenting(client, crm, version="0.9")
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["allowed"] is True
    t = await _consenting(client, crm, version="2")
    assert (await _decide(client, crm, t["id"], "content_subscriptions"))["allowed"] is True
    await _policy(client, admin, "0.10", ["content_subscriptions"])  # no published_at: now
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["reasons"] == [
        "consent_outdated"
    ]
    assert (await _decide(client, crm, t["id"], "content_subscriptions"))["reasons"] == [
        "consent_outdated"
    ]


async def test_an_outdated_transfer_consent_no_longer_permits_the_transfer(client, crm, admin):
    s = await _consenting(client, crm, ("email_campaigns",))
    r = await client.post(
        "/v1/consent-events",
        json=give(s["id"], purpose="international_transfer", recipient="mailchimp"),
        headers=crm,
    )
    assert r.status_code == 201, r.text
    assert (await _decide(client, crm, s["id"], "email_campaigns", "mailchimp"))["allowed"] is True
    await _policy(client, admin, "2", ["international_transfer"])
    d = await _decide(client, crm, s["id"], "email_campaigns", "mailchimp")
    assert d["reasons"] == ["transfer_not_permitted"]
    assert (await _decide(client, crm, s["id"], "email_campaigns"))["allowed"] is True
    items = (await _report(client, crm, "international_transfer"))["items"]
    assert [(i["subject_id"], i["recipient"]) for i in items if i["subject_id"] == s["id"]] == [
        (s["id"], "mailchimp")
    ]


async def test_report_pages_flags_and_leaves_out_the_erased(client, crm, admin):
    people = [await _consenting(client, crm) for _ in range(5)]
    await client.post(
        "/v1/opt-outs",
        json={"email": people[0]["email"], "channel": "email", "source": "crm"},
        headers=crm,
    )
    await _policy(client, admin, "2", ["content_subscriptions"])
    erase = await client.post(
        "/v1/rights-requests", json={"type": "erasure", "subject_id": people[1]["id"]}, headers=crm
    )
    rid = erase.json()["id"]
    await client.post(
        f"/v1/rights-requests/{rid}/verify-identity", json={"method": "email"}, headers=crm
    )
    done = await client.post(f"/v1/rights-requests/{rid}/complete", json={}, headers=crm)
    assert done.json()["outcome"]["erased"] is True, done.text
    seen, cursor = [], None
    while True:
        page = await _report(
            client, crm, "content_subscriptions", limit=2, **({"cursor": cursor} if cursor else {})
        )
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [i["subject_id"] for i in seen]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    expected = {p["id"] for p in people} - {people[1]["id"]}
    assert expected <= set(ids) and people[1]["id"] not in ids
    flags = {i["subject_id"]: i["marketing_opt_out"] for i in seen}
    assert flags[people[0]["id"]] is True and flags[people[2]["id"]] is False


async def test_bad_input_and_roles(client, crm, admin, make_key, db):
    r = await client.post(
        "/v1/policies",
        json={"version": "9", "text_sha256": SHA, "reconsent_purposes": ["no_such_purpose"]},
        headers=admin,
    )
    assert r.status_code == 422 and "no_such_purpose" in r.json()["detail"]
    assert (
        await db.execute(text("SELECT count(*) FROM policies WHERE version = '9'"))
    ).scalar_one() == 0
    assert (await client.get("/v1/reports/reconsent?purpose=nope", headers=crm)).status_code == 422
    assert (await client.get("/v1/reports/reconsent?cursor=xyz", headers=crm)).status_code == 422
    for role in ("website", "sync"):
        r = await client.get("/v1/reports/reconsent", headers=await make_key(role))
        assert r.status_code == 403, role
    old = await client.post(
        "/v1/policies", json={"version": "8", "text_sha256": SHA}, headers=admin
    )
    assert old.status_code == 201 and old.json()["reconsent_purposes"] == []


async def _audience(client, headers, purpose):
    r = await client.get(f"/v1/audiences/{purpose}", params={"limit": 1000}, headers=headers)
    assert r.status_code == 200, r.text
    ids = {m["subject_id"] for m in r.json()["items"]}
    assert r.json()["next_cursor"] is None  # the whole audience in one page
    return ids


async def test_the_audience_drops_outdated_consents_until_given_again(client, crm, admin):
    asked, other = (await _consenting(client, crm), await _consenting(client, crm))
    assert {asked["id"], other["id"]} <= await _audience(client, crm, "content_subscriptions")
    await _policy(client, admin, "2", ["content_subscriptions"])
    assert {asked["id"], other["id"]}.isdisjoint(
        await _audience(client, crm, "content_subscriptions")
    )
    r = await client.post(
        "/v1/consent-events",
        json=give(asked["id"], purpose="content_subscriptions", policy_version="2"),
        headers=crm,
    )
    assert r.status_code == 201, r.text
    now_in = await _audience(client, crm, "content_subscriptions")
    assert asked["id"] in now_in and other["id"] not in now_in
