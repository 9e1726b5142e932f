"""Rights requests: lifecycle, identity, deadlines in the API, and every type's fulfilment
checked in the database."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tests.conftest import new_subject
from tests.test_consent import give


async def _subject(client, crm, **kw):
    return (await client.post("/v1/subjects", json=new_subject(**kw), headers=crm)).json()


async def _request(client, headers, type_, **ref):
    r = await client.post("/v1/rights-requests", json={"type": type_, **ref}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


async def _verified(client, crm, type_, **ref):
    req = await _request(client, crm, type_, **ref)
    r = await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity",
        json={"method": "email", "note": "replied from the address on file"},
        headers=crm,
    )
    assert r.status_code == 200 and r.json()["status"] == "identity_verified"
    return req


async def _complete(client, crm, req, **body):
    r = await client.post(f"/v1/rights-requests/{req['id']}/complete", json=body, headers=crm)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    return r.json()


async def _decide(client, crm, sid, purpose):
    return (
        await client.post(
            "/v1/decisions", json={"subject_id": sid, "purpose": purpose}, headers=crm
        )
    ).json()


async def test_lifecycle_and_illegal_transitions(client, crm):
    s = await _subject(client, crm)
    req = await _request(
        client, crm, "access", subject_id=s["id"], received_at="2026-01-31T10:00:00Z"
    )
    assert req["status"] == "received" and req["due_at"] == "2026-03-02"
    # identity first
    early = await client.post(f"/v1/rights-requests/{req['id']}/complete", json={}, headers=crm)
    assert early.status_code == 409
    await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "document"}, headers=crm
    )
    again = await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "document"}, headers=crm
    )
    assert again.status_code == 409
    await _complete(client, crm, req)
    for action, body in (
        ("reject", {"code": "manifestly_unfounded", "reason": "late"}),
        ("extend", {"months": 1, "reason": "complex"}),
        ("complete", {}),
    ):
        r = await client.post(f"/v1/rights-requests/{req['id']}/{action}", json=body, headers=crm)
        assert r.status_code == 409, action
    full = (await client.get(f"/v1/rights-requests/{req['id']}", headers=crm)).json()
    assert [h["action"] for h in full["history"]] == ["received", "identity_verified", "completed"]
    assert all(h["actor"] for h in full["history"])


async def test_extension_once_before_the_due_date(client, crm):
    s = await _subject(client, crm)
    now = datetime.now(UTC)
    req = await _request(client, crm, "erasure", subject_id=s["id"], received_at=now.isoformat())
    no_reason = await client.post(
        f"/v1/rights-requests/{req['id']}/extend", json={"months": 2}, headers=crm
    )
    assert no_reason.status_code == 422
    ok = await client.post(
        f"/v1/rights-requests/{req['id']}/extend",
        json={"months": 2, "reason": "complex and numerous"},
        headers=crm,
    )
    assert ok.status_code == 200 and ok.json()["extended_months"] == 2
    assert ok.json()["due_at"] > req["due_at"]
    twice = await client.post(
        f"/v1/rights-requests/{req['id']}/extend",
        json={"months": 1, "reason": "again"},
        headers=crm,
    )
    assert twice.status_code == 409
    late = await _request(
        client,
        crm,
        "access",
        subject_id=s["id"],
        received_at=(now - timedelta(days=70)).isoformat(),
    )
    r = await client.post(
        f"/v1/rights-requests/{late['id']}/extend",
        json={"months": 1, "reason": "too late"},
        headers=crm,
    )
    assert r.status_code == 409


async def test_overdue_listing_and_report(client, crm, auditor):
    s = await _subject(client, crm)
    old = await _request(
        client,
        crm,
        "access",
        subject_id=s["id"],
        received_at=(datetime.now(UTC) - timedelta(days=60)).isoformat(),
    )
    fresh = await _request(client, crm, "access", subject_id=s["id"])
    overdue = (await client.get("/v1/rights-requests?overdue=true&limit=1000", headers=crm)).json()
    ids = {r["id"] for r in overdue["items"]}
    assert old["id"] in ids and fresh["id"] not in ids
    assert all(r["overdue"] for r in overdue["items"])
    await client.post(
        f"/v1/rights-requests/{fresh['id']}/verify-identity", json={"method": "email"}, headers=crm
    )
    await _complete(client, crm, fresh)
    report = (await client.get("/v1/reports/rights-requests", headers=auditor)).json()
    assert report["by_type"]["access"] >= 2 and report["by_status"]["completed"] >= 1
    assert old["id"] in {o["id"] for o in report["overdue"]}
    assert report["median_days_to_complete"] is not None


async def test_rejection_needs_a_code_and_an_article_for_exemptions(client, crm):
    s = await _subject(client, crm)
    req = await _request(client, crm, "erasure", subject_id=s["id"])
    bad = await client.post(
        f"/v1/rights-requests/{req['id']}/reject",
        json={"code": "legal_exemption", "reason": "exempt"},
        headers=crm,
    )
    assert bad.status_code == 422
    ok = await client.post(
        f"/v1/rights-requests/{req['id']}/reject",
        json={"code": "legal_exemption", "article": "Art 17(3)(e)", "reason": "legal claims"},
        headers=crm,
    )
    assert ok.status_code == 200 and ok.json()["rejection_article"] == "Art 17(3)(e)"


async def test_roles(client, crm, make_key):
    website = await make_key("website")
    req = await _request(client, website, "access", email="someone@example.com")
    assert (
        await client.get(f"/v1/rights-requests/{req['id']}", headers=website)
    ).status_code == 403
    r = await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity",
        json={"method": "email"},
        headers=website,
    )
    assert r.status_code == 403


async def test_access_report_holds_everything_and_why(client, crm):
    s = await _subject(client, crm, job_title="CTO")
    await client.put(
        f"/v1/subjects/{s['id']}/bases/content_subscriptions",
        json={"basis": "consent"},
        headers=crm,
    )
    await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
    await _decide(client, crm, s["id"], "content_subscriptions")
    await client.post(
        "/v1/opt-outs", json={"email": s["email"], "channel": "phone", "source": "crm"}, headers=crm
    )
    req = await _verified(client, crm, "access", email=s["email"])
    done = await _complete(client, crm, req)
    assert done["outcome"] == {"report": "access", "held": True}
    report = (
        await client.get(f"/v1/rights-requests/{req['id']}/export?format=json", headers=crm)
    ).json()
    assert report["data"]["email"] == s["email"] and report["data"]["job_title"] == "CTO"
    assert report["category"] == "customer_contact" and report["source"]["key"] == "enquiry"
    assert report["purposes"][0]["purpose"] == "content_subscriptions"
    assert report["consent_history"][0]["receipt"]["consentReceiptID"]
    assert report["opt_outs"][0]["channel"] == "phone"
    assert report["decisions_last_12_months"][0]["allowed"] is True
    assert "MailChimp" in [r["name"] for r in report["recipients"]]
    assert report["retention"]["rule"] == "contract_end_plus"
    assert "Information Commissioner" in report["right_to_complain"]
    assert report["controller"]["email"] == "datacontroller@jisoftware.co.uk"
    csv = await client.get(f"/v1/rights-requests/{req['id']}/export?format=csv", headers=crm)
    assert csv.status_code == 422


async def test_access_for_an_unknown_email_says_nothing_is_held(client, crm):
    req = await _verified(client, crm, "access", email=f"ghost-{uuid.uuid4().hex[:6]}@example.com")
    done = await _complete(client, crm, req)
    assert done["outcome"]["held"] is False and done["subject_id"] is None


async def test_portability_only_for_consent_or_contract(client, crm):
    s = await _subject(client, crm, name="Portable Person")
    await client.put(
        f"/v1/subjects/{s['id']}/bases/contractual_communications",
        json={"basis": "contract", "contract_ref": "C-9"},
        headers=crm,
    )
    await client.put(
        f"/v1/subjects/{s['id']}/bases/surveys",
        json={"basis": "legitimate_interests", "lia_ref": "L-1"},
        headers=crm,
    )
    req = await _verified(client, crm, "portability", subject_id=s["id"])
    done = await _complete(client, crm, req)
    assert done["outcome"]["included_purposes"] == ["contractual_communications"]
    assert "surveys" in done["outcome"]["refused"]
    csv = await client.get(f"/v1/rights-requests/{req['id']}/export?format=csv", headers=crm)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].startswith("email,name") and "Portable Person" in lines[1]
    as_json = (await client.get(f"/v1/rights-requests/{req['id']}/export", headers=crm)).json()
    assert as_json["data"]["name"] == "Portable Person"
    # only legitimate interests: refused
    other = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{other['id']}/bases/surveys",
        json={"basis": "legitimate_interests", "lia_ref": "L-1"},
        headers=crm,
    )
    req2 = await _verified(client, crm, "portability", subject_id=other["id"])
    done2 = await _complete(client, crm, req2)
    assert done2["outcome"]["included_purposes"] == [] and done2["outcome"]["refused"]
    assert (
        await client.get(f"/v1/rights-requests/{req2['id']}/export?format=csv", headers=crm)
    ).status_code == 409


async def test_rectification_applies_changes_and_hides_the_old_value(client, crm, db):
    s = await _subject(client, crm, name="Old Wrong Name")
    req = await _verified(client, crm, "rectification", subject_id=s["id"])
    bad = await client.post(
        f"/v1/rights-requests/{req['id']}/complete", json={"changes": {"salary": 1}}, headers=crm
    )
    assert bad.status_code == 422
    done = await _complete(client, crm, req, changes={"name": "New Right Name"})
    assert done["outcome"] == {"rectified_fields": ["name"]}
    row = (
        await db.execute(text("SELECT name FROM subjects WHERE id = :i"), {"i": s["id"]})
    ).scalar()
    assert row == "New Right Name"
    seen = (await client.get(f"/v1/rights-requests/{req['id']}", headers=crm)).text
    assert "Old Wrong Name" not in seen
    history = (
        (
            await db.execute(
                text("SELECT detail::text FROM rights_request_events WHERE request_id = :r"),
                {"r": req["id"]},
            )
        )
        .scalars()
        .all()
    )
    assert not any("Old Wrong Name" in (h or "") for h in history)
    assert any("old_hmac" in (h or "") for h in history)


async def _tables_containing(db, needle: str) -> list[str]:
    columns = (
        await db.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND data_type IN"
                " ('text', 'character varying', 'jsonb', 'json', 'ARRAY')"
            )
        )
    ).all()
    found = []
    for table, column in columns:
        hit = (
            await db.execute(
                text(f'SELECT count(*) FROM "{table}" WHERE lower("{column}"::text) LIKE :n'),
                {"n": f"%{needle.lower()}%"},
            )
        ).scalar()
        if hit:
            found.append(f"{table}.{column}")
    return found


async def test_erasure_leaves_no_clear_text_anywhere_but_keeps_the_opt_out(client, crm, db):
    name = f"Erasable {uuid.uuid4().hex[:8]}"
    s = await _subject(client, crm, name=name)
    headers = {**crm, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    await client.put(
        f"/v1/subjects/{s['id']}/bases/email_campaigns", json={"basis": "consent"}, headers=crm
    )
    await client.post(
        "/v1/consent-events", json=give(s["id"], purpose="email_campaigns"), headers=headers
    )
    await client.post("/v1/opt-outs", json={"email": s["email"], "source": "website"}, headers=crm)
    req = await _verified(client, crm, "erasure", email=s["email"])
    await client.post(
        "/v1/rights-requests",
        json={"type": "access", "email": s["email"], "details": f"I am {name}"},
        headers=crm,
    )
    assert await _tables_containing(db, s["email"])  # the search can find things
    done = await _complete(client, crm, req)
    assert done["outcome"]["erased"] is True
    assert await _tables_containing(db, s["email"]) == []
    assert await _tables_containing(db, name) == []
    subject = (await client.get(f"/v1/subjects/{s['id']}", headers=crm)).json()
    assert subject["status"] == "erased" and subject["email"] is None and subject["erased_at"]
    check = (
        await client.get("/v1/opt-outs/check", params={"email": s["email"]}, headers=crm)
    ).json()
    assert check["opted_out"] is True
    assert (await _decide(client, crm, s["id"], "email_campaigns"))["reasons"] == ["subject_erased"]


async def test_erasure_is_refused_in_part_while_a_contract_runs(client, crm, db):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/contractual_communications",
        json={"basis": "contract", "contract_ref": "C-42"},
        headers=crm,
    )
    await client.put(
        f"/v1/subjects/{s['id']}/bases/account_management",
        json={"basis": "legal_obligation", "obligation": "financial reporting"},
        headers=crm,
    )
    await client.put(
        f"/v1/subjects/{s['id']}/bases/business_development",
        json={"basis": "legitimate_interests", "lia_ref": "L-2"},
        headers=crm,
    )
    req = await _verified(client, crm, "erasure", subject_id=s["id"])
    done = await _complete(client, crm, req)
    outcome = done["outcome"]
    assert outcome["erased"] is False and outcome["partial"] is True
    assert {r["purpose"] for r in outcome["retained_for"]} == {
        "contractual_communications",
        "account_management",
    }
    assert outcome["ended_purposes"] == ["business_development"]
    # Per purpose kept, its article (DOMAIN.md): a running contract still needs the data, so
    # no ground of Art 17(1) applies (17(1)(a)); a legal obligation requires it (17(3)(b)).
    assert outcome["retained_for"] == [
        {"purpose": "account_management", "basis": "legal_obligation",
         "why": "a legal obligation", "article": "17(3)(b)"},
        {"purpose": "contractual_communications", "basis": "contract",
         "why": "a running contract", "article": "17(1)(a)"},
    ]  # fmt: skip
    assert outcome["article"] == "17(1)(a), 17(3)(b)"
    stored = (
        await db.execute(
            text("SELECT result -> 'outcome' FROM rights_requests WHERE id = :r"),
            {"r": done["id"]},
        )
    ).scalar_one()
    assert stored["retained_for"] == outcome["retained_for"]
    assert (await _decide(client, crm, s["id"], "business_development"))["reasons"] == [
        "no_lawful_basis"
    ]
    assert (await _decide(client, crm, s["id"], "contractual_communications"))["allowed"] is True
    row = (
        await db.execute(text("SELECT email FROM subjects WHERE id = :i"), {"i": s["id"]})
    ).scalar()
    assert row == s["email"]


async def test_an_erasure_held_back_by_a_running_contract_alone_cites_17_1_a(client, crm, db):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/account_management",
        json={"basis": "contract", "contract_ref": "C-7", "contract_end": "2099-12-31"},
        headers=crm,
    )
    done = await _complete(client, crm, await _verified(client, crm, "erasure", subject_id=s["id"]))
    outcome = done["outcome"]
    assert outcome["partial"] is True and outcome["article"] == "17(1)(a)"
    assert [(r["purpose"], r["article"]) for r in outcome["retained_for"]] == [
        ("account_management", "17(1)(a)")
    ]
    # A legal obligation alone: 17(3)(b).
    other = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{other['id']}/bases/account_management",
        json={"basis": "legal_obligation", "obligation": "financial reporting"},
        headers=crm,
    )
    done = await _complete(
        client, crm, await _verified(client, crm, "erasure", subject_id=other["id"])
    )
    assert done["outcome"]["article"] == "17(3)(b)"
    assert [r["article"] for r in done["outcome"]["retained_for"]] == ["17(3)(b)"]
    stored = (
        await db.execute(
            text("SELECT result -> 'outcome' -> 'retained_for' FROM rights_requests WHERE id = :r"),
            {"r": done["id"]},
        )
    ).scalar_one()
    assert stored == done["outcome"]["retained_for"]


async def test_restriction_and_its_lifting(client, crm):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/surveys",
        json={"basis": "legitimate_interests", "lia_ref": "L"},
        headers=crm,
    )
    req = await _verified(client, crm, "restriction", subject_id=s["id"])
    await _complete(client, crm, req)
    assert (await client.get(f"/v1/subjects/{s['id']}", headers=crm)).json()[
        "status"
    ] == "restricted"
    assert (await _decide(client, crm, s["id"], "surveys"))["reasons"] == ["restricted"]
    assert (
        await client.delete(f"/v1/subjects/{s['id']}/restriction", headers=crm)
    ).status_code == 204
    assert (await _decide(client, crm, s["id"], "surveys"))["allowed"] is True
    assert (
        await client.delete(f"/v1/subjects/{s['id']}/restriction", headers=crm)
    ).status_code == 404


async def test_withdraw_object_marketing_and_object_processing(client, crm, make_key):
    sync = await make_key("sync")
    start = (await client.get("/v1/changes?limit=1000", headers=sync)).json()["next_after"]
    s = await _subject(client, crm)
    sid = s["id"]
    for purpose, basis in (
        ("content_subscriptions", {"basis": "consent"}),
        ("surveys", {"basis": "legitimate_interests", "lia_ref": "L"}),
        ("day_to_day_communications", {"basis": "legitimate_interests", "lia_ref": "L"}),
        ("email_campaigns", {"basis": "legitimate_interests", "lia_ref": "L"}),
    ):
        await client.put(f"/v1/subjects/{sid}/bases/{purpose}", json=basis, headers=crm)
    await client.post("/v1/consent-events", json=give(sid), headers=crm)
    assert (await _decide(client, crm, sid, "content_subscriptions"))["allowed"] is True

    w = await _verified(client, crm, "withdraw_consent", subject_id=sid)
    assert (await _complete(client, crm, w))["outcome"]["withdrawn"] == ["content_subscriptions"]
    assert (await _decide(client, crm, sid, "content_subscriptions"))["reasons"] == [
        "consent_withdrawn"
    ]

    o = await _verified(client, crm, "object_processing", subject_id=sid)
    assert (await _complete(client, crm, o, purposes=["surveys"]))["outcome"]["objected"] == [
        "surveys"
    ]
    assert (await _decide(client, crm, sid, "surveys"))["reasons"] == ["objected"]
    assert (await _decide(client, crm, sid, "day_to_day_communications"))["allowed"] is True

    m = await _verified(client, crm, "object_marketing", subject_id=sid)
    await _complete(client, crm, m)
    assert (await _decide(client, crm, sid, "email_campaigns"))["reasons"] == ["marketing_opt_out"]

    feed = (await client.get(f"/v1/changes?after={start}&limit=1000", headers=sync)).json()["items"]
    kinds = [c["kind"] for c in feed if c["subject_id"] == sid]
    assert [k for k in kinds if not k.startswith(("subject.", "basis."))] == [
        "consent.given",
        "consent.withdrawn",
        "objection",
        "optout",
    ]
    assert kinds[0] == "subject.created" and "basis.set" in kinds
