"""Issue 8, item 7 (a) and (b): rectification and erasure reach every stored report, and the
gate denies a recipient the catalogue does not list for the purpose."""

import uuid

from sqlalchemy import text

from tests.test_consent import give
from tests.test_rights import _complete, _decide, _subject, _tables_containing, _verified


async def _with_stored_reports(client, crm, name):
    """A subject with an access report, a portability report and a request whose free text
    names them, all stored before the change."""
    s = await _subject(client, crm, name=name, phone="+44 20 7946 0999")
    await client.put(
        f"/v1/subjects/{s['id']}/bases/content_subscriptions",
        json={"basis": "consent"},
        headers=crm,
    )
    await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
    access = await _verified(client, crm, "access", email=s["email"])
    await _complete(client, crm, access)
    portability = await _verified(client, crm, "portability", subject_id=s["id"])
    await _complete(client, crm, portability)
    await client.post(
        "/v1/rights-requests",
        json={"type": "access", "email": s["email"], "details": f"Please, I am {name}."},
        headers=crm,
    )
    for req in (access, portability):
        report = await client.get(f"/v1/rights-requests/{req['id']}/export", headers=crm)
        assert report.status_code == 200 and name in report.text  # the copies hold the values
    return s, access, portability


async def test_rectification_reaches_every_stored_report(client, crm, db):
    old_name = f"Superseded {uuid.uuid4().hex[:8]}"
    s, access, portability = await _with_stored_reports(client, crm, old_name)
    new_email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    assert await _tables_containing(db, old_name) and await _tables_containing(db, s["email"])

    req = await _verified(client, crm, "rectification", subject_id=s["id"])
    done = await _complete(client, crm, req, changes={"name": "Current Name", "email": new_email})
    assert done["outcome"] == {"rectified_fields": ["email", "name"]}

    assert await _tables_containing(db, old_name) == []
    assert await _tables_containing(db, s["email"]) == []
    for earlier in (access, portability):
        r = await client.get(f"/v1/rights-requests/{earlier['id']}/export", headers=crm)
        assert r.status_code == 409 and "new access" in r.json()["detail"]
        assert old_name not in r.text
        stored = (
            await db.execute(
                text("SELECT status, result FROM rights_requests WHERE id = :i"),
                {"i": earlier["id"]},
            )
        ).one()
        assert stored.status == "completed" and stored.result["outcome"]  # outcome stays
        assert stored.result["report_withdrawn"] == "rectification"
    # The free text keeps its sense, not the old value.
    details = (
        (
            await db.execute(
                text(
                    "SELECT details FROM rights_requests WHERE subject_id = :s AND details IS NOT NULL"
                ),
                {"s": s["id"]},
            )
        )
        .scalars()
        .all()
    )
    assert details == ["Please, I am [rectified]."]
    # A new access request reports the current values.
    fresh = await _verified(client, crm, "access", subject_id=s["id"])
    await _complete(client, crm, fresh)
    report = (await client.get(f"/v1/rights-requests/{fresh['id']}/export", headers=crm)).json()
    assert report["data"]["name"] == "Current Name" and report["data"]["email"] == new_email


async def test_a_rectified_phone_leaves_no_copy(client, crm, db):
    s, *_ = await _with_stored_reports(client, crm, f"Phoned {uuid.uuid4().hex[:6]}")
    req = await _verified(client, crm, "rectification", subject_id=s["id"])
    await _complete(client, crm, req, changes={"phone": "+44 20 7946 0000"})
    assert await _tables_containing(db, "+44 20 7946 0999") == []


async def test_erasure_reaches_every_stored_report(client, crm, db):
    name = f"Erased {uuid.uuid4().hex[:8]}"
    s, access, portability = await _with_stored_reports(client, crm, name)
    req = await _verified(client, crm, "erasure", subject_id=s["id"])
    assert (await _complete(client, crm, req))["outcome"]["erased"] is True
    assert await _tables_containing(db, name) == []
    assert await _tables_containing(db, s["email"]) == []
    for earlier in (access, portability):
        r = await client.get(f"/v1/rights-requests/{earlier['id']}/export", headers=crm)
        assert r.status_code == 409 and name not in r.text


# 7(b): a recipient the catalogue does not list for the purpose.


async def _stored_reasons(db, decision_id):
    return (
        await db.execute(
            text("SELECT allowed, reasons FROM decisions WHERE id = :i"), {"i": decision_id}
        )
    ).one()


async def test_a_recipient_not_listed_for_the_purpose_is_denied(client, crm, db):
    s = await _subject(client, crm)
    sid = s["id"]
    li = {"basis": "legitimate_interests", "lia_ref": "LIA-1"}
    await client.put(f"/v1/subjects/{sid}/bases/surveys", json=li, headers=crm)
    # SurveyMonkey (outside the EEA/UK) needs the transfer consent; then surveys may go there.
    await client.post(
        "/v1/consent-events",
        json=give(sid, purpose="international_transfer", recipient="surveymonkey"),
        headers=crm,
    )
    ok = (
        await client.post(
            "/v1/decisions",
            json={"subject_id": sid, "purpose": "surveys", "recipient": "surveymonkey"},
            headers=crm,
        )
    ).json()
    assert ok["allowed"] is True, ok
    # Maximizer is a partner listed for partner_referral only: surveys to it are denied.
    denied = await client.post(
        "/v1/decisions",
        json={"subject_id": sid, "purpose": "surveys", "recipient": "maximizer"},
        headers=crm,
    )
    assert denied.status_code == 200
    assert denied.json()["allowed"] is False
    assert denied.json()["reasons"] == ["recipient_not_for_purpose"]
    stored = await _stored_reasons(db, denied.json()["id"])
    assert stored.allowed is False and stored.reasons == ["recipient_not_for_purpose"]
    # Without a recipient the purpose itself stays allowed.
    assert (await _decide(client, crm, sid, "surveys"))["allowed"] is True


async def test_the_batch_gives_the_same_reason(client, crm):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/surveys",
        json={"basis": "legitimate_interests", "lia_ref": "L"},
        headers=crm,
    )
    r = await client.post(
        "/v1/decisions/batch",
        json={"purpose": "surveys", "recipient": "mailchimp", "subjects": [s["id"]]},
        headers=crm,
    )
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert "recipient_not_for_purpose" in item["reasons"]


async def test_the_new_reason_code_is_in_the_openapi_schema(client):
    spec = (await client.get("/openapi.json")).json()
    decision = spec["components"]["schemas"]["DecisionPublic"]["properties"]["reasons"]
    assert "recipient_not_for_purpose" in decision["items"]["enum"]
    assert "recipient_not_for_purpose" in decision["description"]
