"""Stop the clock: pausing and resuming a rights request over HTTP, checked in the database,
on a controlled clock (month ends, weekends, bank holidays)."""

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text

from app.services.rights import clock as rights_clock
from app.services.rights import deadline_report, deadlines
from app.services.rights import requests as rights
from tests.conftest import new_subject


class Clock:
    now = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch):
    """The rights services' `now` and UK `today`, set by the test."""
    c = Clock()
    for module in (rights, rights_clock):
        monkeypatch.setattr(module, "utcnow", lambda: c.now)
        monkeypatch.setattr(module, "today_uk", lambda now=None: deadlines.today_uk(now or c.now))
    monkeypatch.setattr(deadline_report, "utcnow", lambda: c.now)  # the report's running pauses
    return c


def at(y, m, d, hour=12):
    return datetime(y, m, d, hour, tzinfo=UTC)


async def _new_request(client, crm, clock, received_at, type_="access"):
    clock.now = received_at
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    r = await client.post(
        "/v1/rights-requests",
        json={"type": type_, "subject_id": s["id"], "received_at": received_at.isoformat()},
        headers=crm,
    )
    assert r.status_code == 201, r.text
    return r.json()


async def _act(client, crm, clock, req_id, action, when, body=None):
    clock.now = when
    return await client.post(f"/v1/rights-requests/{req_id}/{action}", json=body, headers=crm)


async def _stored(db, req_id):
    return (
        await db.execute(
            text(
                "SELECT due_at, paused_since, pause_reason, paused_days FROM rights_requests"
                " WHERE id = :i"
            ),
            {"i": req_id},
        )
    ).one()


@pytest.mark.parametrize(
    ("received", "extension", "paused", "expected"),
    [
        (at(2027, 1, 31), 0, 0, date(2027, 3, 1)),
        (at(2027, 1, 31), 0, 6, date(2027, 3, 8)),  # Sunday 7 March -> Monday
        (at(2027, 4, 20), 0, 11, date(2027, 6, 1)),  # 31 May: Spring bank holiday
        (at(2027, 11, 22), 0, 5, date(2027, 12, 29)),  # 22 Dec + 5: 27-28 Dec observed
        (
            at(2027, 1, 31),
            2,
            3,
            date(2027, 5, 4),
        ),  # extended to 30 Apr (Fri), +3 -> Mon 3 May holiday
    ],
)
def test_due_date_with_paused_days(received, extension, paused, expected):
    assert deadlines.due_date(received, extension, paused) == expected


def test_paused_days_count_uk_calendar_days():
    # 23:30 UTC on 30 June is 1 July in London: the pause began on 1 July.
    assert deadlines.days_paused(at(2027, 6, 30, 23).replace(minute=30), at(2027, 7, 3)) == 2
    assert deadlines.days_paused(at(2027, 7, 3, 8), at(2027, 7, 3, 17)) == 0


async def test_pause_crossing_a_month_end_moves_to_the_next_working_day(client, crm, clock, db):
    # Received Sunday 31 Jan 2027: 28 Feb is a Sunday, so due Monday 1 March.
    req = await _new_request(client, crm, clock, at(2027, 1, 31, 10))
    assert req["due_at"] == "2027-03-01"
    r = await _act(
        client,
        crm,
        clock,
        req["id"],
        "pause",
        at(2027, 2, 20),
        {"reason": "awaiting_identity", "note": "asked Ms Example for a passport scan"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["paused"] is True and r.json()["pause_reason"] == "awaiting_identity"
    row = await _stored(db, req["id"])
    assert row.paused_since == at(2027, 2, 20) and row.due_at == date(2027, 3, 1)
    r = await _act(client, crm, clock, req["id"], "resume", at(2027, 2, 26))
    assert r.status_code == 200, r.text
    # 6 calendar days: 1 Mar + 6 = Sunday 7 Mar -> Monday 8 Mar.
    assert r.json()["due_at"] == "2027-03-08" and r.json()["paused"] is False
    row = await _stored(db, req["id"])
    assert row.due_at == date(2027, 3, 8) and row.paused_since is None
    assert row.paused_days == 6 and row.pause_reason is None


async def test_two_pauses_landing_on_a_bank_holiday(client, crm, clock, db):
    req = await _new_request(client, crm, clock, at(2027, 4, 20, 9))
    assert req["due_at"] == "2027-05-20"
    await _act(client, crm, clock, req["id"], "pause", at(2027, 4, 25), {"reason": "awaiting_fee"})
    first = await _act(client, crm, clock, req["id"], "resume", at(2027, 5, 1))
    assert first.json()["due_at"] == "2027-05-26"  # 20 May + 6 days, a Wednesday
    second = await _act(
        client,
        crm,
        clock,
        req["id"],
        "pause",
        at(2027, 5, 10),
        {"reason": "awaiting_clarification"},
    )
    assert second.status_code == 200, second.text
    done = await _act(client, crm, clock, req["id"], "resume", at(2027, 5, 15))
    # 11 days in all: 31 May 2027 is the Spring bank holiday -> Tuesday 1 June.
    assert done.json()["due_at"] == "2027-06-01" and done.json()["paused_days"] == 11
    assert (await _stored(db, req["id"])).due_at == date(2027, 6, 1)


async def test_a_paused_request_is_not_overdue_and_is_listed_as_paused(client, crm, clock):
    req = await _new_request(client, crm, clock, at(2027, 3, 1))
    running = await _new_request(client, crm, clock, at(2027, 3, 1))
    await _act(
        client, crm, clock, req["id"], "pause", at(2027, 3, 20), {"reason": "awaiting_identity"}
    )
    clock.now = at(2027, 6, 1)  # long past the original due date (1 April)
    one = (await client.get(f"/v1/rights-requests/{req['id']}", headers=crm)).json()
    assert one["paused"] is True and one["overdue"] is False
    assert one["paused_since"].startswith("2027-03-20")
    overdue = (await client.get("/v1/rights-requests?overdue=true&limit=1000", headers=crm)).json()
    ids = {r["id"] for r in overdue["items"]}
    assert running["id"] in ids and req["id"] not in ids
    paused = (await client.get("/v1/rights-requests?paused=true&limit=1000", headers=crm)).json()
    assert req["id"] in {r["id"] for r in paused["items"]}
    assert running["id"] not in {r["id"] for r in paused["items"]}
    assert all(r["paused"] for r in paused["items"])
    unpaused = (await client.get("/v1/rights-requests?paused=false&limit=1000", headers=crm)).json()
    assert req["id"] not in {r["id"] for r in unpaused["items"]}
    # Resumed on 1 June: 73 days paused, due 1 April + 73 = 13 June (Sunday) -> 14 June.
    resumed = await _act(client, crm, clock, req["id"], "resume", at(2027, 6, 1))
    assert resumed.json()["due_at"] == "2027-06-14" and resumed.json()["overdue"] is False


async def test_illegal_pauses_and_resumes_are_409(client, crm, clock, db):
    req = await _new_request(client, crm, clock, at(2027, 3, 1))
    not_paused = await _act(client, crm, clock, req["id"], "resume", at(2027, 3, 2))
    assert not_paused.status_code == 409
    assert not_paused.headers["content-type"].startswith("application/problem+json")
    ok = await _act(
        client, crm, clock, req["id"], "pause", at(2027, 3, 2), {"reason": "awaiting_fee"}
    )
    assert ok.status_code == 200
    twice = await _act(
        client, crm, clock, req["id"], "pause", at(2027, 3, 3), {"reason": "awaiting_fee"}
    )
    assert twice.status_code == 409
    bad = await _act(client, crm, clock, req["id"], "pause", at(2027, 3, 3), {"reason": "lunch"})
    assert bad.status_code == 422
    # Rejecting a paused request ends the pause; the closed request cannot be paused.
    rejected = await _act(
        client,
        crm,
        clock,
        req["id"],
        "reject",
        at(2027, 3, 5),
        {"code": "identity_not_confirmed", "reason": "no reply"},
    )
    assert rejected.status_code == 200 and rejected.json()["paused"] is False
    row = await _stored(db, req["id"])
    assert row.paused_since is None and row.paused_days == 3
    for when in (at(2027, 3, 6),):
        r = await _act(client, crm, clock, req["id"], "pause", when, {"reason": "awaiting_fee"})
        assert r.status_code == 409
    done = await _new_request(client, crm, clock, at(2027, 3, 1))
    await _act(
        client, crm, clock, done["id"], "verify-identity", at(2027, 3, 2), {"method": "email"}
    )
    assert (
        await _act(client, crm, clock, done["id"], "complete", at(2027, 3, 3), {})
    ).status_code == 200
    r = await _act(
        client, crm, clock, done["id"], "pause", at(2027, 3, 4), {"reason": "awaiting_fee"}
    )
    assert r.status_code == 409
    assert (await _stored(db, done["id"])).paused_since is None
    late = await _new_request(client, crm, clock, at(2027, 3, 1))
    r = await _act(
        client, crm, clock, late["id"], "pause", at(2027, 4, 5), {"reason": "awaiting_fee"}
    )
    assert r.status_code == 409  # due 1 April has passed: too late to stop the clock
    assert (await _stored(db, late["id"])).paused_since is None
    unknown = await _act(
        client, crm, clock, "00000000-0000-0000-0000-000000000000", "resume", at(2027, 3, 4)
    )
    assert unknown.status_code == 404


async def test_each_pause_and_resume_is_an_event_and_an_audit_entry(client, crm, clock, db):
    req = await _new_request(client, crm, clock, at(2027, 3, 1))
    note = "waiting for Ada's passport"
    await _act(
        client,
        crm,
        clock,
        req["id"],
        "pause",
        at(2027, 3, 2),
        {"reason": "awaiting_identity", "note": note},
    )
    await _act(client, crm, clock, req["id"], "resume", at(2027, 3, 4))
    await _act(client, crm, clock, req["id"], "pause", at(2027, 3, 5), {"reason": "awaiting_fee"})
    events = (
        await db.execute(
            text(
                "SELECT action, detail FROM rights_request_events WHERE request_id = :i ORDER BY id"
            ),
            {"i": req["id"]},
        )
    ).all()
    assert [e.action for e in events] == ["received", "paused", "resumed", "paused"]
    assert events[1].detail == {
        "public": {"reason": "awaiting_identity"},
        "private": {"note": note},
    }
    assert events[2].detail["public"] == {
        "reason": "awaiting_identity",
        "days": 2,
        "due_at": "2027-04-05",  # 1 April + 2 = Saturday 3 April -> Monday 5 April
    }
    audit = (
        await db.execute(
            text(
                "SELECT action, digest FROM audit_entries WHERE entity = 'rights_request'"
                " AND entity_id = :i ORDER BY id"
            ),
            {"i": req["id"]},
        )
    ).all()
    actions = [a.action for a in audit]
    assert actions == [
        "rights_request.received",
        "rights_request.paused",
        "rights_request.resumed",
        "rights_request.paused",
    ]
    assert all(note not in str(a.digest) for a in audit)
    full = (await client.get(f"/v1/rights-requests/{req['id']}", headers=crm)).json()
    assert [h["action"] for h in full["history"]] == ["received", "paused", "resumed", "paused"]
    assert note not in str(full)
    # Erasing the person removes the note with the rest of their request's contents.
    clock.now = at(2027, 3, 6)
    erase = await client.post(
        "/v1/rights-requests",
        json={
            "type": "erasure",
            "subject_id": req["subject_id"],
            "received_at": "2027-03-06T10:00:00Z",
        },
        headers=crm,
    )
    await _act(
        client,
        crm,
        clock,
        erase.json()["id"],
        "verify-identity",
        at(2027, 3, 6),
        {"method": "email"},
    )
    done = await _act(client, crm, clock, erase.json()["id"], "complete", at(2027, 3, 6), {})
    assert done.status_code == 200, done.text
    details = (
        await db.execute(
            text("SELECT detail FROM rights_request_events WHERE request_id = :i"), {"i": req["id"]}
        )
    ).scalars()
    assert all(note not in str(d) for d in details)


async def test_the_report_counts_paused_requests_and_days(client, crm, auditor, clock):
    clock.now = at(2027, 3, 10)
    before = (await client.get("/v1/reports/rights-requests", headers=auditor)).json()
    a = await _new_request(client, crm, clock, at(2027, 3, 1))
    b = await _new_request(client, crm, clock, at(2027, 3, 1))
    await _act(client, crm, clock, a["id"], "pause", at(2027, 3, 2), {"reason": "awaiting_fee"})
    await _act(client, crm, clock, a["id"], "resume", at(2027, 3, 6))  # 4 days, ended
    await _act(client, crm, clock, b["id"], "pause", at(2027, 3, 7), {"reason": "awaiting_fee"})
    clock.now = at(2027, 3, 10)  # b paused 3 days so far
    report = (await client.get("/v1/reports/rights-requests", headers=auditor)).json()
    assert report["paused"] == before["paused"] + 1
    assert report["days_paused"] == before["days_paused"] + 7


async def test_roles_for_pause(client, crm, clock, make_key):
    req = await _new_request(client, crm, clock, at(2027, 3, 1))
    for role in ("website", "auditor", "sync"):
        headers = await make_key(role)
        r = await client.post(
            f"/v1/rights-requests/{req['id']}/pause",
            json={"reason": "awaiting_fee"},
            headers=headers,
        )
        assert r.status_code == 403, role
