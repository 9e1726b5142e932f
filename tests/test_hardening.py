"""Edge cases found in review: races, odd input, and privacy corners of erasure,
rectification, GPC and objections."""

import asyncio
import uuid

import httpx
from sqlalchemy import text

from app.main import create_app
from app.services.access import api_keys
from tests.conftest import new_subject
from tests.test_consent import give
from tests.test_rights import _complete, _decide, _subject, _verified


async def test_a_back_dated_gpc_signal_still_wins_and_records_the_conflict(client, crm):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/partner_referral", json={"basis": "consent"}, headers=crm
    )
    await client.post(
        "/v1/consent-events", json=give(s["id"], purpose="partner_referral"), headers=crm
    )
    r = await client.post(
        "/v1/consent-events",
        json={
            "subject_id": s["id"],
            "purpose": "partner_referral",
            "action": "withdrawn",
            "method": "gpc",
            "occurred_at": "2020-01-01T00:00:00Z",
        },
        headers=crm,
    )
    assert r.status_code == 201
    assert "earlier explicit consent" in r.json()["conflict"]
    assert (await _decide(client, crm, s["id"], "partner_referral"))["reasons"] == [
        "consent_withdrawn"
    ]


async def test_objecting_to_a_marketing_purpose_is_an_opt_out(client, crm):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/email_campaigns", json={"basis": "consent"}, headers=crm
    )
    await client.post(
        "/v1/consent-events", json=give(s["id"], purpose="email_campaigns"), headers=crm
    )
    await client.put(
        f"/v1/subjects/{s['id']}/bases/surveys", json={"basis": "consent"}, headers=crm
    )
    req = await _verified(client, crm, "object_processing", subject_id=s["id"])
    done = await _complete(client, crm, req, purposes=["email_campaigns", "surveys"])
    assert done["outcome"]["opted_out_of_marketing"] == ["email_campaigns"]
    # Both are recorded as objections (issue 8); on consent, the opt-out is what bites.
    assert done["outcome"]["objected"] == ["email_campaigns", "surveys"]
    assert done["outcome"]["not_on_legitimate_interests"] == ["email_campaigns", "surveys"]
    assert (await _decide(client, crm, s["id"], "email_campaigns"))["reasons"] == [
        "marketing_opt_out"
    ]


async def test_a_partial_erasure_cannot_be_undone_by_re_recording_a_basis(client, crm):
    s = await _subject(client, crm)
    sid = s["id"]
    await client.put(
        f"/v1/subjects/{sid}/bases/account_management",
        json={"basis": "legal_obligation", "obligation": "tax"},
        headers=crm,
    )
    await client.put(
        f"/v1/subjects/{sid}/bases/email_campaigns", json={"basis": "consent"}, headers=crm
    )
    await client.post("/v1/consent-events", json=give(sid, purpose="email_campaigns"), headers=crm)
    req = await _verified(client, crm, "erasure", subject_id=sid)
    done = await _complete(client, crm, req)
    assert done["outcome"]["partial"] is True
    assert "tax" not in str(done["outcome"])  # free text stays out of outcome and audit
    await client.put(
        f"/v1/subjects/{sid}/bases/email_campaigns", json={"basis": "consent"}, headers=crm
    )
    assert (await _decide(client, crm, sid, "email_campaigns"))["reasons"] == ["consent_withdrawn"]
    await client.put(
        f"/v1/subjects/{sid}/bases/surveys",
        json={"basis": "legitimate_interests", "lia_ref": "L"},
        headers=crm,
    )
    assert (await _decide(client, crm, sid, "surveys"))["reasons"] == ["objected"]


async def test_rectification_leaves_no_old_value_readable(client, crm, db):
    headers = {**crm, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = new_subject(name="Superseded Name")
    s = (await client.post("/v1/subjects", json=body, headers=headers)).json()
    req = await _verified(client, crm, "rectification", email=s["email"])
    new_email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    await _complete(client, crm, req, changes={"name": "Current Name", "email": new_email})
    stored = (
        await db.execute(
            text("SELECT count(*) FROM idempotency_keys WHERE key = :k"),
            {"k": headers["Idempotency-Key"]},
        )
    ).scalar()
    assert stored == 0  # the stored reply echoed the old name: it is gone
    for needle in ("Superseded Name", s["email"], "Current Name"):
        rows = (
            await db.execute(
                text(
                    "SELECT count(*) FROM rights_request_events e JOIN rights_requests r ON r.id = e.request_id"
                    " WHERE r.id = :r AND (e.detail::text LIKE :n OR coalesce(r.email, '') LIKE :n)"
                ),
                {"r": req["id"], "n": f"%{needle}%"},
            )
        ).scalar()
        assert rows == 0, needle


async def test_changing_the_email_keeps_the_marketing_opt_out(client, crm):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/email_campaigns",
        json={"basis": "legitimate_interests", "lia_ref": "L"},
        headers=crm,
    )
    await client.post("/v1/opt-outs", json={"email": s["email"], "source": "crm"}, headers=crm)
    await client.patch(
        f"/v1/subjects/{s['id']}",
        json={"email": f"moved-{uuid.uuid4().hex[:6]}@example.com"},
        headers=crm,
    )
    assert (await _decide(client, crm, s["id"], "email_campaigns"))["reasons"] == [
        "marketing_opt_out"
    ]


async def test_opt_out_replies_carry_no_free_text(client, crm, make_key):
    website = await make_key("website")
    body = {"email": "someone@example.com", "source": "crm", "reason": "Zelda phoned 07700 900123"}
    await client.post("/v1/opt-outs", json=body, headers=crm)
    again = await client.post(
        "/v1/opt-outs", json={**body, "source": "website", "reason": None}, headers=website
    )
    assert again.status_code == 200 and "Zelda" not in again.text


async def test_erasure_clears_free_text_on_requests_and_opt_outs(client, crm, db):
    name = f"Freetext {uuid.uuid4().hex[:6]}"
    s = await _subject(client, crm, name=name)
    await client.post(
        "/v1/opt-outs",
        json={"email": s["email"], "source": "crm", "reason": f"{name} asked by phone"},
        headers=crm,
    )
    other = await _verified(client, crm, "access", subject_id=s["id"])
    await client.post(
        f"/v1/rights-requests/{other['id']}/extend",
        json={"months": 1, "reason": f"{name} sent 3 boxes of papers"},
        headers=crm,
    )
    req = await _verified(client, crm, "erasure", subject_id=s["id"])
    await _complete(client, crm, req)
    for table, column in (("rights_requests", "extension_reason"), ("marketing_optouts", "reason")):
        hits = (
            await db.execute(
                text(f"SELECT count(*) FROM {table} WHERE {column} LIKE :n"), {"n": f"%{name}%"}
            )
        ).scalar()
        assert hits == 0, table


async def test_odd_input_is_a_4xx_never_a_500(client, crm, auditor):
    s = await _subject(client, crm)
    # One at a time: the test's requests share one connection.
    cases = [
        lambda: client.post("/v1/subjects", json=new_subject(name="a\u0000b"), headers=crm),
        lambda: client.get("/v1/subjects", params={"category": "x\u0000"}, headers=crm),
        lambda: client.post(
            "/v1/consent-events", json=give(s["id"], occurred_at="2024-01-01T00:00:00"), headers=crm
        ),
        lambda: client.post(
            "/v1/rights-requests",
            json={"type": "access", "subject_id": s["id"], "received_at": "0001-01-01T00:00:00Z"},
            headers=crm,
        ),
        lambda: client.patch(
            f"/v1/subjects/{s['id']}",
            json={"interest_ceased_at": "9999-12-31T23:59:59-10:00"},
            headers=crm,
        ),
        lambda: client.get("/v1/changes", params={"after": 10**20}, headers=auditor),
        lambda: client.get(
            "/v1/audit/events", params={"cursor": "WyJ4Il0"}, headers=auditor
        ),  # ["x"]
        lambda: client.get("/v1/subjects", params={"cursor": "WzEsMl0"}, headers=crm),  # [1,2]
    ]
    for case in cases:
        r = await case()
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"


async def test_portability_csv_defuses_formulas(client, crm):
    s = await _subject(client, crm, company='=HYPERLINK("http://evil")')
    await client.put(
        f"/v1/subjects/{s['id']}/bases/contractual_communications",
        json={"basis": "contract", "contract_ref": "C"},
        headers=crm,
    )
    req = await _verified(client, crm, "portability", subject_id=s["id"])
    await _complete(client, crm, req)
    csv = (await client.get(f"/v1/rights-requests/{req['id']}/export?format=csv", headers=crm)).text
    assert "'=HYPERLINK" in csv


async def _real_client(engine, test_settings, role):
    app = create_app(test_settings, engine=engine)
    async with app.state.sessionmaker() as session:
        key = await api_keys.create_key(session, name=f"{role}-{uuid.uuid4().hex[:6]}", role=role)
        await session.commit()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return app, client, {"Authorization": f"Bearer {key}"}


async def test_races_end_in_clean_answers(engine, test_settings):
    _, client, crm = await _real_client(engine, test_settings, "crm")
    _, other, website = await _real_client(engine, test_settings, "website")
    await other.aclose()
    async with client:
        a = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
        b = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
        taken = f"race-{uuid.uuid4().hex[:8]}@example.com"
        r1, r2 = await asyncio.gather(
            client.patch(f"/v1/subjects/{a['id']}", json={"email": taken}, headers=crm),
            client.patch(f"/v1/subjects/{b['id']}", json={"email": taken}, headers=crm),
        )
        assert sorted([r1.status_code, r2.status_code]) == [200, 409]
        fresh = f"web-{uuid.uuid4().hex[:8]}@example.com"
        w1, w2 = await asyncio.gather(
            *(
                client.post("/v1/consent-events", json=give(email=fresh), headers=website)
                for _ in range(2)
            )
        )
        assert (w1.status_code, w2.status_code) == (201, 201)
        assert w1.json()["subject_id"] == w2.json()["subject_id"]


async def test_an_update_waits_for_a_running_erasure_and_then_refuses(engine, test_settings):
    app, client, crm = await _real_client(engine, test_settings, "crm")
    async with client:
        s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
        async with engine.connect() as eraser:
            await eraser.begin()
            await eraser.execute(
                text("SELECT 1 FROM subjects WHERE id = :i FOR UPDATE"), {"i": s["id"]}
            )
            patch = asyncio.create_task(
                client.patch(f"/v1/subjects/{s['id']}", json={"name": "Back Again"}, headers=crm)
            )
            await asyncio.sleep(0.3)
            assert not patch.done()  # waiting on the erasure's lock
            await eraser.execute(
                text(
                    "UPDATE subjects SET name = NULL, email = NULL, erased_at = now() WHERE id = :i"
                ),
                {"i": s["id"]},
            )
            await eraser.commit()
        r = await asyncio.wait_for(patch, timeout=30)
        assert r.status_code == 409
        async with app.state.sessionmaker() as session:
            name = (
                await session.execute(
                    text("SELECT name FROM subjects WHERE id = :i"), {"i": s["id"]}
                )
            ).scalar()
        assert name is None
