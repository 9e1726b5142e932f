"""Consent is the basis where none is recorded (DOMAIN.md "Lawful basis", Art 6(1)(a)): over
HTTP, through the API and the import alike, asserting on the stored basis, its history, the
consent event and the decision. A consent never replaces a recorded basis."""

import json

import pytest
from sqlalchemy import text

from app.services.access import api_keys
from tests.conftest import new_subject
from tests.test_consent import give

NDJSON = {"Content-Type": "application/x-ndjson"}
LI = {"basis": "legitimate_interests", "lia_ref": "LIA-7"}
CRM = "basis-crm"


@pytest.fixture
async def crm(db):
    """A crm key with a known name (the actor of what it sets); rolled back with the test."""
    key = await api_keys.create_key(db, name=CRM, role="crm")
    await db.commit()
    return {"Authorization": f"Bearer {key}"}


async def _subject(client, crm, **extra):
    r = await client.post("/v1/subjects", json=new_subject(**extra), headers=crm)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _consent(client, crm, sid, purpose="content_subscriptions", **extra):
    r = await client.post(
        "/v1/consent-events", json=give(sid, purpose=purpose, **extra), headers=crm
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _decide(client, crm, sid, purpose, recipient=None):
    body = {"subject_id": sid, "purpose": purpose}
    if recipient:
        body["recipient"] = recipient
    r = await client.post("/v1/decisions", json=body, headers=crm)
    assert r.status_code == 200, r.text
    return r.json()


async def _basis(db, sid, purpose):
    return (
        await db.execute(
            text("SELECT basis, set_by FROM lawful_bases WHERE subject_id = :s AND purpose = :p"),
            {"s": sid, "p": purpose},
        )
    ).one_or_none()


async def _history(db, sid, purpose):
    return (
        await db.execute(
            text(
                "SELECT action, value, previous, actor FROM lawful_basis_history"
                " WHERE subject_id = :s AND purpose = :p ORDER BY id"
            ),
            {"s": sid, "p": purpose},
        )
    ).all()


CONSENT_VALUE = {
    "basis": "consent",
    "contract_ref": None,
    "contract_start": None,
    "contract_end": None,
    "lia_ref": None,
    "obligation": None,
    "note": None,
}


async def test_consent_alone_allows_and_records_consent_as_the_basis(client, crm, db):
    sid = await _subject(client, crm)
    event = await _consent(client, crm, sid)
    decision = await _decide(client, crm, sid, "content_subscriptions")
    assert decision["allowed"] is True and decision["reasons"] == []
    assert decision["basis"] == "consent"
    # The basis, its history entry (the consent event is the actor) and the event, as stored.
    assert tuple(await _basis(db, sid, "content_subscriptions")) == (
        "consent",
        f"consent_event:{event}",
    )
    history = await _history(db, sid, "content_subscriptions")
    assert [tuple(h) for h in history] == [("set", CONSENT_VALUE, None, f"consent_event:{event}")]
    stored_event = (
        await db.execute(
            text("SELECT subject_id, purpose, action FROM consent_events WHERE id = :e"),
            {"e": event},
        )
    ).one()
    assert (str(stored_event.subject_id), stored_event.purpose) == (sid, "content_subscriptions")
    stored = (
        await db.execute(
            text("SELECT allowed, basis, reasons FROM decisions WHERE id = :d"),
            {"d": decision["id"]},
        )
    ).one()
    assert tuple(stored) == (True, "consent", [])
    # Through the API: the history entry names the consent event.
    api = await client.get(f"/v1/subjects/{sid}/bases/content_subscriptions/history", headers=crm)
    assert [i["actor"] for i in api.json()["items"]] == [f"consent_event:{event}"]
    # Audited as a basis set, and in the change feed after the consent it comes from.
    audit = (
        await db.execute(
            text(
                "SELECT actor_name, digest FROM audit_entries WHERE action = 'basis.set'"
                " AND entity_id = :s"
            ),
            {"s": sid},
        )
    ).one()
    assert audit.actor_name == CRM
    assert audit.digest == {
        "purpose": "content_subscriptions",
        "basis": "consent",
        "replaced": False,
        "consent_event_id": event,
    }
    feed = (
        await db.execute(
            text("SELECT kind, purpose FROM changes WHERE subject_id = :s ORDER BY id"), {"s": sid}
        )
    ).all()
    assert [tuple(f) for f in feed] == [
        ("subject.created", None),
        ("consent.given", "content_subscriptions"),
        ("basis.set", "content_subscriptions"),
    ]


async def test_a_recorded_basis_is_never_replaced_by_a_consent(client, crm, db):
    sid = await _subject(client, crm)
    r = await client.put(f"/v1/subjects/{sid}/bases/email_campaigns", json=LI, headers=crm)
    assert r.status_code == 200, r.text
    r = await client.put(
        f"/v1/subjects/{sid}/bases/content_subscriptions", json={"basis": "consent"}, headers=crm
    )
    assert r.status_code == 200, r.text
    await _consent(client, crm, sid, "email_campaigns")
    await _consent(client, crm, sid, "content_subscriptions")
    assert tuple(await _basis(db, sid, "email_campaigns")) == ("legitimate_interests", CRM)
    assert tuple(await _basis(db, sid, "content_subscriptions")) == ("consent", CRM)
    for purpose in ("email_campaigns", "content_subscriptions"):
        history = await _history(db, sid, purpose)
        assert [(h.action, h.actor) for h in history] == [("set", CRM)], purpose
    decision = await _decide(client, crm, sid, "email_campaigns")
    assert decision["allowed"] is True and decision["basis"] == "legitimate_interests"


async def test_a_contract_is_not_replaced_and_a_second_consent_adds_nothing(client, crm, db):
    sid = await _subject(client, crm)
    r = await client.put(
        f"/v1/subjects/{sid}/bases/day_to_day_communications",
        json={"basis": "contract", "contract_ref": "C-9"},
        headers=crm,
    )
    assert r.status_code == 200, r.text
    await _consent(client, crm, sid, "day_to_day_communications")
    assert (await _basis(db, sid, "day_to_day_communications")).basis == "contract"
    # A purpose that may not rest on consent gets no basis from one.
    await _consent(client, crm, sid, "contractual_communications")
    assert await _basis(db, sid, "contractual_communications") is None
    decision = await _decide(client, crm, sid, "contractual_communications")
    assert decision["reasons"] == ["no_lawful_basis"]
    # The first consent made the basis; the next one changes nothing.
    first = await _consent(client, crm, sid, "surveys")
    await _consent(client, crm, sid, "surveys")
    history = await _history(db, sid, "surveys")
    assert [h.actor for h in history] == [f"consent_event:{first}"]


async def test_withdrawal_leaves_the_basis_and_the_gate_denies(client, crm, db):
    """DOMAIN.md says nothing of a withdrawal ending the basis: the consent-derived basis
    stays, and the consent state (withdrawn) is what the gate denies on."""
    sid = await _subject(client, crm)
    event = await _consent(client, crm, sid)
    r = await client.post(
        "/v1/consent-events",
        json={"subject_id": sid, "purpose": "content_subscriptions", "action": "withdrawn"},
        headers=crm,
    )
    assert r.status_code == 201, r.text
    assert tuple(await _basis(db, sid, "content_subscriptions")) == (
        "consent",
        f"consent_event:{event}",
    )
    assert len(await _history(db, sid, "content_subscriptions")) == 1
    decision = await _decide(client, crm, sid, "content_subscriptions")
    assert decision["reasons"] == ["consent_withdrawn"] and decision["basis"] == "consent"
    # A basis ended by the CRM is recorded again by the next consent, its history one chain.
    r = await client.delete(f"/v1/subjects/{sid}/bases/content_subscriptions", headers=crm)
    assert r.status_code == 204
    again = await _consent(client, crm, sid)
    history = await _history(db, sid, "content_subscriptions")
    assert [(h.action, h.previous, h.actor) for h in history] == [
        ("set", None, f"consent_event:{event}"),
        ("ended", CONSENT_VALUE, CRM),
        ("set", None, f"consent_event:{again}"),
    ]
    assert (await _decide(client, crm, sid, "content_subscriptions"))["allowed"] is True


async def test_the_transfer_consent_lets_the_mailchimp_audience_have_the_person(
    client, crm, make_key, db
):
    sid = await _subject(client, crm)
    await _consent(client, crm, sid)
    denied = await _decide(client, crm, sid, "content_subscriptions", "mailchimp")
    assert denied["reasons"] == ["transfer_not_permitted"]
    await _consent(client, crm, sid, "international_transfer", recipient="mailchimp")
    allowed = await _decide(client, crm, sid, "content_subscriptions", "mailchimp")
    assert allowed["allowed"] is True, allowed
    # The transfer consent is a consent for the purpose `international_transfer` (DOMAIN.md
    # §8), which has no basis recorded: consent becomes its basis too.
    assert (await _basis(db, sid, "international_transfer")).basis == "consent"
    sync = await make_key("sync")
    audience = await client.get(
        "/v1/audiences/content_subscriptions?recipient=mailchimp&limit=1000", headers=sync
    )
    assert sid in [i["subject_id"] for i in audience.json()["items"]]


async def test_the_import_records_consent_as_the_basis_as_the_api_does(client, crm, db):
    consents = [
        {"purpose": "content_subscriptions", "action": "given", "policy_version": "1",
         "notice_text": "Tick for white papers.", "occurred_at": "2026-01-05T10:00:00Z"},
        {"purpose": "content_subscriptions", "action": "given", "policy_version": "1",
         "notice_text": "Tick for white papers.", "occurred_at": "2026-01-06T10:00:00Z"},
        {"purpose": "email_campaigns", "action": "given", "policy_version": "1",
         "notice_text": "Tick for campaigns.", "occurred_at": "2026-01-05T10:00:00Z"},
        {"purpose": "surveys", "action": "given", "policy_version": "1",
         "notice_text": "Tick for surveys.", "occurred_at": "2026-01-05T10:00:00Z"},
        {"purpose": "surveys", "action": "withdrawn", "occurred_at": "2026-02-01T09:00:00Z"},
    ]  # fmt: skip
    row = new_subject(bases=[{"purpose": "email_campaigns", **LI}], consents=consents)
    r = await client.post(
        "/v1/subjects/import", content=json.dumps(row).encode() + b"\n", headers={**crm, **NDJSON}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["imported"], report["bases"], report["consents"]) == (1, 3, 5)
    sid = str(
        (
            await db.execute(text("SELECT id FROM subjects WHERE email = :e"), {"e": row["email"]})
        ).scalar_one()
    )
    first = (
        await db.execute(
            text(
                "SELECT id FROM consent_events WHERE subject_id = :s"
                " AND purpose = 'content_subscriptions' ORDER BY occurred_at LIMIT 1"
            ),
            {"s": sid},
        )
    ).scalar_one()
    assert tuple(await _basis(db, sid, "content_subscriptions")) == (
        "consent",
        f"consent_event:{first}",
    )
    history = await _history(db, sid, "content_subscriptions")
    assert [tuple(h) for h in history] == [("set", CONSENT_VALUE, None, f"consent_event:{first}")]
    assert (await _basis(db, sid, "email_campaigns")).basis == "legitimate_interests"
    assert (await _decide(client, crm, sid, "content_subscriptions"))["allowed"] is True
    assert (await _decide(client, crm, sid, "surveys"))["reasons"] == ["consent_withdrawn"]

    # The same person through the single writes: the same bases and history values.
    twin = await _subject(client, crm)
    await client.put(f"/v1/subjects/{twin}/bases/email_campaigns", json=LI, headers=crm)
    for c in consents:
        r = await client.post(
            "/v1/consent-events", json={**c, "subject_id": twin, "method": "import"}, headers=crm
        )
        assert r.status_code == 201, r.text
    shape = text(
        "SELECT purpose, action, value, previous, actor LIKE 'consent_event:%' FROM"
        " lawful_basis_history WHERE subject_id = :s ORDER BY purpose, id"
    )
    imported = [tuple(h) for h in (await db.execute(shape, {"s": sid})).all()]
    single = [tuple(h) for h in (await db.execute(shape, {"s": twin})).all()]
    assert imported == single and len(imported) == 3
    feed = text("SELECT kind, purpose FROM changes WHERE subject_id = :s")
    assert sorted((await db.execute(feed, {"s": sid})).all(), key=str) == sorted(
        (await db.execute(feed, {"s": twin})).all(), key=str
    )
    audit = (
        await db.execute(
            text(
                "SELECT digest FROM audit_entries WHERE action = 'subject.import'"
                " AND digest->>'input_sha256' = :h"
            ),
            {"h": report["sha256"]},
        )
    ).scalar_one()
    assert (audit["bases"], audit["consent_bases"]) == (1, 2)


async def test_an_erased_subject_gets_no_basis_from_a_consent(client, crm, db):
    sid = await _subject(client, crm)
    req = await client.post(
        "/v1/rights-requests", json={"type": "erasure", "subject_id": sid}, headers=crm
    )
    rid = req.json()["id"]
    await client.post(
        f"/v1/rights-requests/{rid}/verify-identity", json={"method": "email"}, headers=crm
    )
    assert (
        await client.post(f"/v1/rights-requests/{rid}/complete", json={}, headers=crm)
    ).status_code == 200
    r = await client.post("/v1/consent-events", json=give(sid), headers=crm)
    assert r.status_code == 409
    assert await _basis(db, sid, "content_subscriptions") is None
