"""Consent ledger, receipts, GPC, opt-outs and the change feed."""

import asyncio
import uuid

import jwt
from sqlalchemy import text

from tests.conftest import new_subject
from tests.routes import all_routes

NOTICE = "Tick to receive white papers and blog posts from JI Group. Unsubscribe any time."


def give(subject_id=None, email=None, purpose="content_subscriptions", **extra):
    body = {
        "purpose": purpose,
        "action": "given",
        "method": "web_form",
        "policy_version": "1",
        "notice_text": NOTICE,
        "evidence": {
            "form_id": "form-one",  # no hex and hyphen: a UUID cannot contain it
            "page_url": "https://example.com/p",
            "user_agent": "Mozilla/5.0",
        },
    }
    body.update({"subject_id": subject_id} if subject_id else {"email": email})
    body.update(extra)
    return body


async def _subject(client, crm):
    return (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()


async def _decide(client, crm, sid, purpose, recipient=None):
    body = {"subject_id": sid, "purpose": purpose}
    if recipient:
        body["recipient"] = recipient
    return (await client.post("/v1/decisions", json=body, headers=crm)).json()


async def test_history_is_appended_and_state_follows_the_newest_event(client, crm, db):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/content_subscriptions",
        json={"basis": "consent"},
        headers=crm,
    )
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["reasons"] == [
        "consent_missing"
    ]
    r = await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
    assert r.status_code == 201, r.text
    given = r.json()
    assert given["notice_sha256"] and given["evidence"]["form_id"] == "form-one"
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["allowed"] is True
    # Withdrawal: subject, purpose and method only.
    w = await client.post(
        "/v1/consent-events",
        json={
            "subject_id": s["id"],
            "purpose": "content_subscriptions",
            "action": "withdrawn",
            "method": "email",
        },
        headers=crm,
    )
    assert w.status_code == 201, w.text
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["reasons"] == [
        "consent_withdrawn"
    ]
    # A back-dated import does not move the state backwards.
    old = give(s["id"], method="import", occurred_at="2020-01-01T00:00:00Z")
    assert (await client.post("/v1/consent-events", json=old, headers=crm)).status_code == 201
    state = (await client.get(f"/v1/subjects/{s['id']}/consents", headers=crm)).json()["items"]
    assert [(i["purpose"], i["status"]) for i in state] == [("content_subscriptions", "withdrawn")]
    history = (await client.get(f"/v1/consent-events?subject_id={s['id']}", headers=crm)).json()[
        "items"
    ]
    assert [e["action"] for e in history] == ["given", "given", "withdrawn"]  # by occurred_at
    rows = (
        await db.execute(
            text("SELECT count(*) FROM consent_events WHERE subject_id = :s"), {"s": s["id"]}
        )
    ).scalar()
    assert rows == 3
    notices = (
        await db.execute(
            text("SELECT count(*) FROM consent_notices WHERE text = :t"), {"t": NOTICE}
        )
    ).scalar()
    assert notices == 1  # stored once


async def test_no_api_route_updates_or_deletes_events(app):
    routes = [
        (m, r.path) for r in all_routes(app) for m in r.methods or () if "consent-events" in r.path
    ]
    assert routes and {m for m, _ in routes} <= {"GET", "POST", "HEAD"}


async def test_validation(client, crm):
    s = await _subject(client, crm)
    bad = [
        give(s["id"], policy_version="9.9"),
        give(s["id"], notice_text=None),
        give(s["id"], recipient="bpmonline"),
        give(s["id"], purpose="international_transfer"),
        give(s["id"], purpose="telepathy"),
        give(s["id"], method="carrier_pigeon"),
        give(s["id"], occurred_at="2999-01-01T00:00:00Z"),
        give(s["id"], date_of_birth="1990-01-01"),
        {**give(s["id"]), "email": "x@example.com"},
    ]
    for body in bad:
        r = await client.post("/v1/consent-events", json=body, headers=crm)
        assert r.status_code == 422, (body, r.text)
    unknown = await client.post("/v1/consent-events", json=give(str(uuid.uuid4())), headers=crm)
    assert unknown.status_code == 404


async def test_website_consent_from_an_unknown_email_creates_a_prospect(client, make_key, crm):
    website = await make_key("website")
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    r = await client.post("/v1/consent-events", json=give(email=email), headers=website)
    assert r.status_code == 201, r.text
    subject = (await client.get(f"/v1/subjects/{r.json()['subject_id']}", headers=crm)).json()
    assert subject["email"] == email and subject["category"] == "prospect"
    assert subject["source"] == "enquiry"
    # the CRM must name an existing subject
    crm_try = await client.post(
        "/v1/consent-events", json=give(email="other@example.com"), headers=crm
    )
    assert crm_try.status_code == 404


async def test_transfer_consent_names_its_recipient_and_feeds_the_gate(client, crm):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/partner_referral",
        json={"basis": "legitimate_interests", "lia_ref": "LIA-7"},
        headers=crm,
    )
    d = await _decide(client, crm, s["id"], "partner_referral", "bpmonline")
    assert d["reasons"] == ["transfer_not_permitted"]
    body = give(s["id"], purpose="international_transfer", recipient="bpmonline")
    assert (await client.post("/v1/consent-events", json=body, headers=crm)).status_code == 201
    assert (await _decide(client, crm, s["id"], "partner_referral", "bpmonline"))["allowed"] is True
    assert (await _decide(client, crm, s["id"], "partner_referral", "mailchimp"))[
        "allowed"
    ] is False


async def test_receipt_fields_and_signed_receipt_verifies_with_the_published_jwks(client, crm):
    s = await _subject(client, crm)
    event = (await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)).json()
    receipt = event["receipt"]
    for field in (
        "version",
        "jurisdiction",
        "consentTimestamp",
        "collectionMethod",
        "consentReceiptID",
        "piiPrincipalId",
        "piiControllers",
        "policyUrl",
        "services",
        "sensitive",
    ):
        assert field in receipt, field
    purpose = receipt["services"][0]["purposes"][0]
    for field in (
        "purposeCategory",
        "consentType",
        "piiCategory",
        "termination",
        "thirdPartyDisclosure",
        "thirdPartyName",
    ):
        assert field in purpose, field
    assert receipt["consentReceiptID"] == event["id"]
    assert receipt["piiControllers"][0]["piiController"] == "JI Group"
    assert receipt["piiPrincipalId"] == s["id"] and s["email"] not in str(receipt)
    assert receipt["iso27560"]["notice"]["sha256"] == event["notice_sha256"]

    as_json = await client.get(f"/v1/consent-events/{event['id']}/receipt", headers=crm)
    assert as_json.json() == receipt
    signed = await client.get(
        f"/v1/consent-events/{event['id']}/receipt", headers={**crm, "Accept": "application/jose"}
    )
    assert signed.headers["content-type"].startswith("application/jose")
    token = signed.text
    jwks = (await client.get("/v1/keys", headers=crm)).json()
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    key = jwt.PyJWK(jwk).key
    # Verified by PyJWT, an independent JOSE implementation.
    assert jwt.decode(token, key, algorithms=[jwk["alg"]]) == receipt
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{sig}"
    try:
        jwt.decode(tampered, key, algorithms=[jwk["alg"]])
        raise AssertionError("tampered token accepted")
    except jwt.InvalidTokenError:
        pass


async def test_opt_out_blocks_consented_marketing_and_survives_erasure(client, crm, db):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/email_campaigns", json={"basis": "consent"}, headers=crm
    )
    await client.post(
        "/v1/consent-events", json=give(s["id"], purpose="email_campaigns"), headers=crm
    )
    assert (await _decide(client, crm, s["id"], "email_campaigns"))["allowed"] is True
    body = {
        "email": s["email"].upper(),
        "channel": "email",
        "source": "website",
        "reason": "unsubscribe link",
    }
    first = await client.post("/v1/opt-outs", json=body, headers=crm)
    assert first.status_code == 201 and "email" not in first.json()
    again = await client.post("/v1/opt-outs", json=body, headers=crm)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert (await _decide(client, crm, s["id"], "email_campaigns"))["reasons"] == [
        "marketing_opt_out"
    ]
    check = (
        await client.get("/v1/opt-outs/check", params={"email": s["email"]}, headers=crm)
    ).json()
    assert check == {"opted_out": True, "channels": ["email"]}
    stored = (
        await db.execute(
            text("SELECT * FROM marketing_optouts WHERE id = :i"), {"i": first.json()["id"]}
        )
    ).one()
    assert s["email"] not in str(tuple(stored))
    # Erase the subject row; the same person reappears in an import.
    await db.execute(
        text(
            "UPDATE subjects SET email = NULL, name = NULL, email_hash = NULL,"
            " erased_at = now() WHERE id = :i"
        ),
        {"i": s["id"]},
    )
    await db.commit()
    again_subject = await client.post(
        "/v1/subjects", json=new_subject(email=s["email"]), headers=crm
    )
    new_id = again_subject.json()["id"]
    await client.put(
        f"/v1/subjects/{new_id}/bases/email_campaigns", json={"basis": "consent"}, headers=crm
    )
    await client.post(
        "/v1/consent-events",
        json=give(new_id, purpose="email_campaigns", method="import"),
        headers=crm,
    )
    assert (await _decide(client, crm, new_id, "email_campaigns"))["reasons"] == [
        "marketing_opt_out"
    ]


async def test_gpc_header_withdraws_partner_sharing_and_records_the_conflict(client, crm, db):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/partner_referral", json={"basis": "consent"}, headers=crm
    )
    await client.post(
        "/v1/consent-events", json=give(s["id"], purpose="partner_referral"), headers=crm
    )
    assert (await _decide(client, crm, s["id"], "partner_referral"))["allowed"] is True
    r = await client.post(
        "/v1/consent-events",
        json=give(s["id"], purpose="content_subscriptions"),
        headers={**crm, "Sec-GPC": "1"},
    )
    assert r.status_code == 201
    extra = r.json()["also_recorded"]
    assert len(extra) == 1 and extra[0]["method"] == "gpc" and extra[0]["action"] == "withdrawn"
    assert (
        extra[0]["purpose"] == "partner_referral"
        and "earlier explicit consent" in extra[0]["conflict"]
    )
    assert (await _decide(client, crm, s["id"], "partner_referral"))["reasons"] == [
        "consent_withdrawn"
    ]
    # Never erasure: the subject and its other consent are untouched.
    subject = (await client.get(f"/v1/subjects/{s['id']}", headers=crm)).json()
    assert subject["status"] == "active" and subject["email"] == s["email"]
    # A legitimate-interests basis cannot carry the sharing either (objection recorded).
    await client.put(
        f"/v1/subjects/{s['id']}/bases/partner_referral",
        json={"basis": "legitimate_interests", "lia_ref": "L"},
        headers=crm,
    )
    assert (await _decide(client, crm, s["id"], "partner_referral"))["reasons"] == ["objected"]
    # A repeated signal adds nothing.
    r2 = await client.post(
        "/v1/consent-events",
        json=give(s["id"], purpose="content_subscriptions"),
        headers={**crm, "Sec-GPC": "1"},
    )
    assert r2.json()["also_recorded"] == []


async def test_gpc_method_and_a_give_in_the_same_request(client, crm):
    s = await _subject(client, crm)
    r = await client.post(
        "/v1/consent-events",
        json=give(s["id"], purpose="partner_referral"),
        headers={**crm, "Sec-GPC": "1"},
    )
    extra = r.json()["also_recorded"]
    assert extra and "same request" in extra[0]["conflict"]
    state = (await client.get(f"/v1/subjects/{s['id']}/consents", headers=crm)).json()["items"]
    assert {i["purpose"]: i["status"] for i in state}["partner_referral"] == "withdrawn"
    gpc = await client.post(
        "/v1/consent-events",
        json={
            "subject_id": s["id"],
            "purpose": "partner_referral",
            "action": "withdrawn",
            "method": "gpc",
        },
        headers=crm,
    )
    assert gpc.status_code == 201
    # A GPC signal is a "no": it never records a consent given.
    bad = await client.post(
        "/v1/consent-events",
        json=give(s["id"], purpose="email_campaigns", method="gpc"),
        headers=crm,
    )
    assert bad.status_code == 422


async def test_change_feed_records_consent_and_opt_outs_in_order(client, crm, make_key):
    sync = await make_key("sync")
    start = (await client.get("/v1/changes?after=0&limit=1000", headers=sync)).json()["next_after"]
    s = await _subject(client, crm)
    await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
    await client.post("/v1/opt-outs", json={"email": s["email"], "source": "crm"}, headers=crm)
    page = (await client.get(f"/v1/changes?after={start}", headers=sync)).json()
    kinds = [(c["kind"], c["subject_id"]) for c in page["items"]]
    # The consent, given where no basis was recorded, made consent the basis (DOMAIN.md).
    assert kinds == [
        ("subject.created", s["id"]),
        ("consent.given", s["id"]),
        ("basis.set", s["id"]),
        ("optout", s["id"]),
    ]
    assert all(c["email_hash"] and len(c["email_hash"]) == 64 for c in page["items"])
    assert s["email"] not in str(page)
    seqs = [c["seq"] for c in page["items"]]
    assert seqs == sorted(seqs) and page["next_after"] == seqs[-1]
    empty = (await client.get(f"/v1/changes?after={page['next_after']}", headers=sync)).json()
    assert empty == {"items": [], "next_after": page["next_after"]}


async def test_a_consent_event_for_a_known_subject_is_one_round_trip(db):
    from app.core.auth import ROLE_SCOPES, Principal
    from app.models.consent import ConsentEventCreate
    from app.services.consent.events import record_consent
    from tests import gate_state as gs
    from tests.driver_log import statements_sent

    crm = Principal(uuid.uuid4(), "t", "crm", ROLE_SCOPES["crm"])
    sid = await gs.subject(db)
    data = ConsentEventCreate.model_validate(give(str(sid)))
    await record_consent(db, crm, data=data)  # opens the savepoint
    async with statements_sent(db) as statements:
        await record_consent(db, crm, data=data)
    assert len(statements) == 1, statements
    stored = await db.execute(
        text("SELECT count(*) FROM consent_events WHERE subject_id = :s"), {"s": sid}
    )
    assert stored.scalar_one() == 2


async def _ledger_counts(db, notice: str) -> tuple[int, ...]:
    row = await db.execute(
        text(
            "SELECT (SELECT count(*) FROM consent_events), (SELECT count(*) FROM consent_state),"
            " (SELECT count(*) FROM changes), (SELECT count(*) FROM audit_entries),"
            " (SELECT count(*) FROM consent_notices WHERE text = :n)"
        ),
        {"n": notice},
    )
    return tuple(row.one())


async def test_a_refused_consent_says_why_and_stores_nothing(client, crm, db):
    """The one-statement write refuses as the lookup did, in the same order, and stores
    nothing: not the event, the state, the feed or audit entry, nor the notice's text."""
    from tests import gate_state as gs

    live = (await _subject(client, crm))["id"]
    erased = str(await gs.subject(db, erased=True))
    notice = f"A notice nobody has stored yet {uuid.uuid4()}"
    cases = [
        (give(live, purpose="telepathy", policy_version="9.9", notice_text=notice), 422,
         "purpose"),
        (give(live, policy_version="9.9", notice_text=notice), 422, "policy_version"),
        (give(live, purpose="international_transfer", recipient="nobody",
              notice_text=notice), 422, "recipient"),
        (give(erased, policy_version="9.9", notice_text=notice), 422, "policy_version"),
        (give(str(uuid.uuid4()), notice_text=notice), 404, None),
        (give(erased, notice_text=notice), 409, None),
        # A value PostgreSQL cannot store (NUL) is refused before any look-up, whoever the
        # subject: the one statement carries it (the two-step path answered 404 here).
        (give(str(uuid.uuid4()), notice_text=notice, evidence={"user_agent": "a\u0000b"}),
         422, None),
    ]  # fmt: skip
    before = await _ledger_counts(db, notice)
    for body, status, field in cases:
        r = await client.post("/v1/consent-events", json=body, headers=crm)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        if field is not None:
            assert r.json()["field"] == field, r.json()
    assert await _ledger_counts(db, notice) == before
    given = await client.post(
        "/v1/consent-events", json=give(live, notice_text=notice), headers=crm
    )
    assert given.status_code == 201
    after = await _ledger_counts(db, notice)
    assert after[0] == before[0] + 1 and after[4] == 1


async def test_consent_event_ids_are_time_ordered_version_7(client, crm):
    """A new event's id is a UUID version 7, as a decision's: later events sort after
    earlier ones, so each appends to the primary key's index (no random page per event)."""
    s = await _subject(client, crm)
    ids = []
    for body in (give(s["id"]), give(s["id"], action="withdrawn")):
        r = await client.post("/v1/consent-events", json=body, headers=crm)
        assert r.status_code == 201, r.text
        ids.append(uuid.UUID(r.json()["id"]))
        await asyncio.sleep(0.005)  # the next id in a later millisecond: ordered by time
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids[0] < ids[1]
