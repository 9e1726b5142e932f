"""Issue 8: calls a client writes from API.md alone are accepted, and do what they say
(checked in the stored rows, not only in the answers)."""

import uuid
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from app.services.rights.deadlines import due_date
from tests.test_consent import _decide, _subject, give
from tests.test_rights import _complete, _request, _verified

LONDON = ZoneInfo("Europe/London")


async def _event_row(db, event_id):
    return (
        await db.execute(text("SELECT * FROM consent_events WHERE id = :i"), {"i": event_id})
    ).one()


async def _state(db, sid, purpose):
    return (
        await db.execute(
            text("SELECT status FROM consent_state WHERE subject_id = :s AND purpose = :p"),
            {"s": sid, "p": purpose},
        )
    ).scalar()


# 1. Withdrawal is as easy as giving (Art 7(3)).


async def test_a_withdrawal_needs_only_subject_purpose_and_action(client, crm, db):
    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/content_subscriptions",
        json={"basis": "consent"},
        headers=crm,
    )
    assert (await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)).is_success
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["allowed"] is True

    r = await client.post(
        "/v1/consent-events",
        json={"subject_id": s["id"], "purpose": "content_subscriptions", "action": "withdrawn"},
        headers=crm,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["method"] == "unspecified" and body["action"] == "withdrawn"
    assert body["receipt"]  # a withdrawal has its receipt too
    row = await _event_row(db, body["id"])
    assert (row.action, row.method, row.policy_version, row.notice_sha256) == (
        "withdrawn",
        "unspecified",
        None,
        None,
    )
    assert row.recorded_by.startswith("crm-")  # who recorded it is known
    assert await _state(db, s["id"], "content_subscriptions") == "withdrawn"
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["reasons"] == [
        "consent_withdrawn"
    ]


async def test_a_withdrawal_by_email_with_a_method_is_kept_as_sent(client, crm, db):
    s = await _subject(client, crm)
    r = await client.post(
        "/v1/consent-events",
        json={
            "email": s["email"],
            "purpose": "email_campaigns",
            "action": "withdrawn",
            "method": "phone",
        },
        headers=crm,
    )
    assert r.status_code == 201, r.text
    assert (await _event_row(db, r.json()["id"])).method == "phone"


@pytest.mark.parametrize("missing", ["method", "policy_version", "notice_text"])
async def test_giving_still_needs_method_policy_and_notice(client, crm, db, missing):
    s = await _subject(client, crm)
    body = give(s["id"])
    del body[missing]
    r = await client.post("/v1/consent-events", json=body, headers=crm)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    count = (
        await db.execute(
            text("SELECT count(*) FROM consent_events WHERE subject_id = :s"), {"s": s["id"]}
        )
    ).scalar()
    assert count == 0


# 2. GPC withdraws any purpose; a GPC "given" is refused; the header keeps its meaning.


@pytest.mark.parametrize("purpose", ["email_campaigns", "surveys", "content_subscriptions"])
async def test_gpc_withdraws_any_purpose(client, crm, db, purpose):
    s = await _subject(client, crm)
    await client.post("/v1/consent-events", json=give(s["id"], purpose=purpose), headers=crm)
    r = await client.post(
        "/v1/consent-events",
        json={"subject_id": s["id"], "purpose": purpose, "action": "withdrawn", "method": "gpc"},
        headers=crm,
    )
    assert r.status_code == 201, r.text
    row = await _event_row(db, r.json()["id"])
    assert (row.purpose, row.action, row.method) == (purpose, "withdrawn", "gpc")
    assert await _state(db, s["id"], purpose) == "withdrawn"


async def test_gpc_withdraws_a_transfer_consent(client, crm, db):
    s = await _subject(client, crm)
    r = await client.post(
        "/v1/consent-events",
        json={
            "subject_id": s["id"],
            "purpose": "international_transfer",
            "recipient": "mailchimp",
            "action": "withdrawn",
            "method": "gpc",
        },
        headers=crm,
    )
    assert r.status_code == 201, r.text
    assert (await _event_row(db, r.json()["id"])).recipient == "mailchimp"


async def test_a_gpc_given_is_refused_and_the_header_still_objects(client, crm, db):
    s = await _subject(client, crm)
    bad = await client.post("/v1/consent-events", json=give(s["id"], method="gpc"), headers=crm)
    assert bad.status_code == 422 and "gpc" in bad.json()["detail"]
    r = await client.post(
        "/v1/consent-events",
        json={"subject_id": s["id"], "purpose": "surveys", "action": "withdrawn"},
        headers={**crm, "Sec-GPC": "1"},
    )
    assert r.status_code == 201
    assert [e["purpose"] for e in r.json()["also_recorded"]] == ["partner_referral"]
    objected = (
        await db.execute(
            text("SELECT purpose, source FROM objections WHERE subject_id = :s"), {"s": s["id"]}
        )
    ).all()
    assert [tuple(o) for o in objected] == [("partner_referral", "gpc")]
    assert await _state(db, s["id"], "partner_referral") == "withdrawn"


# 3. An objection is recorded as an objection (and, for direct marketing, also an opt-out).


async def test_object_processing_records_objections_and_the_marketing_opt_out(client, crm, db):
    s = await _subject(client, crm)
    sid = s["id"]
    li = {"basis": "legitimate_interests", "lia_ref": "LIA-7"}
    for purpose in ("email_campaigns", "surveys", "day_to_day_communications"):
        r = await client.put(f"/v1/subjects/{sid}/bases/{purpose}", json=li, headers=crm)
        assert r.is_success, r.text
    req = await _verified(client, crm, "object_processing", subject_id=sid)
    done = await _complete(client, crm, req, purposes=["email_campaigns", "surveys"])
    assert done["outcome"]["objected"] == ["email_campaigns", "surveys"]
    assert done["outcome"]["opted_out_of_marketing"] == ["email_campaigns"]

    rows = (
        await db.execute(
            text("SELECT purpose, source FROM objections WHERE subject_id = :s ORDER BY purpose"),
            {"s": sid},
        )
    ).all()
    assert [tuple(r) for r in rows] == [
        ("email_campaigns", "rights_request"),
        ("surveys", "rights_request"),
    ]
    optout = (
        await db.execute(
            text("SELECT channel, source FROM marketing_optouts WHERE email_hash = :h"),
            {
                "h": (
                    await db.execute(
                        text("SELECT email_hash FROM subjects WHERE id = :s"), {"s": sid}
                    )
                ).scalar()
            },
        )
    ).all()
    assert [tuple(o) for o in optout] == [("all", "rights_request")]

    assert (await _decide(client, crm, sid, "email_campaigns"))["reasons"] == [
        "objected",
        "marketing_opt_out",
    ]
    assert (await _decide(client, crm, sid, "surveys"))["reasons"] == ["objected"]
    # Not named, not direct marketing: still allowed.
    assert (await _decide(client, crm, sid, "day_to_day_communications"))["allowed"] is True


# 4. Rejection as API.md writes it: {reason}, code optional.


async def _rejection(db, request_id):
    return (
        await db.execute(
            text(
                "SELECT status, rejection_code, rejection_reason, rejection_article"
                " FROM rights_requests WHERE id = :i"
            ),
            {"i": request_id},
        )
    ).one()


async def test_rejection_with_a_reason_alone(client, crm, db):
    req = await _request(client, crm, "access", email=f"r-{uuid.uuid4().hex[:8]}@example.com")
    r = await client.post(
        f"/v1/rights-requests/{req['id']}/reject", json={"reason": "No"}, headers=crm
    )
    assert r.status_code == 200, r.text
    assert r.json()["rejection_code"] == "other" and r.json()["rejection_reason"] == "No"
    assert tuple(await _rejection(db, req["id"])) == ("rejected", "other", "No", None)


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": ""}, {"reason": "   "}, {"code": "manifestly_excessive"}],
    ids=["empty", "blank", "spaces", "code-only"],
)
async def test_rejection_without_a_reason_is_422_and_changes_nothing(client, crm, db, body):
    req = await _request(client, crm, "access", email=f"r-{uuid.uuid4().hex[:8]}@example.com")
    r = await client.post(f"/v1/rights-requests/{req['id']}/reject", json=body, headers=crm)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert tuple(await _rejection(db, req["id"])) == ("received", None, None, None)


async def test_a_legal_exemption_still_names_its_article(client, crm, db):
    req = await _request(client, crm, "erasure", email=f"r-{uuid.uuid4().hex[:8]}@example.com")
    url = f"/v1/rights-requests/{req['id']}/reject"
    bad = await client.post(url, json={"reason": "x", "code": "legal_exemption"}, headers=crm)
    assert bad.status_code == 422
    assert tuple(await _rejection(db, req["id"])) == ("received", None, None, None)
    ok = await client.post(
        url,
        json={"reason": "legal claims", "code": "legal_exemption", "article": "Art 17(3)(e)"},
        headers=crm,
    )
    assert ok.status_code == 200
    assert tuple(await _rejection(db, req["id"])) == (
        "rejected",
        "legal_exemption",
        "legal claims",
        "Art 17(3)(e)",
    )


# 6. The received date: any past date, never the future.


async def test_a_request_received_by_post_last_month_is_entered_late(client, crm, db):
    received = datetime.now(UTC) - timedelta(days=40)
    for value in (received.isoformat(), received.date().isoformat()):
        req = await _request(client, crm, "access", email="late@example.com", received_at=value)
        stored = (
            await db.execute(
                text("SELECT received_at, due_at FROM rights_requests WHERE id = :i"),
                {"i": req["id"]},
            )
        ).one()
        if "T" in value:
            assert stored.received_at == received
        else:  # a bare date is that day's start in UK time (23:00 UTC the day before in summer)
            assert stored.received_at.astimezone(LONDON).date() == received.date()
            assert stored.received_at.astimezone(LONDON).time() == time(0, 0)
        assert stored.due_at == due_date(stored.received_at)
        assert req["due_at"] == str(stored.due_at)
    listed = (await client.get("/v1/rights-requests?overdue=true", headers=crm)).json()
    assert req["id"] in {i["id"] for i in listed["items"]}  # already late: a month has passed


async def test_a_future_received_date_is_refused_and_says_why(client, crm, db):
    before = (await db.execute(text("SELECT count(*) FROM rights_requests"))).scalar()
    for value in (
        (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        (datetime.now(UTC) + timedelta(days=3)).date().isoformat(),
    ):
        r = await client.post(
            "/v1/rights-requests",
            json={"type": "access", "email": "soon@example.com", "received_at": value},
            headers=crm,
        )
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "future" in r.json()["detail"]
    assert (await db.execute(text("SELECT count(*) FROM rights_requests"))).scalar() == before
