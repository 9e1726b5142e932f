"""Retention (§7): one due date for the gate and the sweep (month ends, 29 February, UK
time), every held-back case, dry runs that change nothing, real runs that erase in
resumable batches and leave a record, and admin-only access. Checked in the database."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.core.auth import ROLE_SCOPES, Principal
from app.core.db import create_sessionmaker
from app.models.base import LONDON
from app.services.gate.decisions import decide
from app.services.retention import sweep
from app.services.retention.due import find_due
from tests import gate_state as gs

ADMIN = Principal(uuid.uuid4(), "test-admin", "admin", ROLE_SCOPES["admin"])
SECOND = timedelta(seconds=1)


async def _due_ids(db, now, grace_days=0):
    return {r.subject_id: r for r in await find_due(db, now=now, grace_days=grace_days)}


async def _gate_expired(db, sid, purpose, now):
    d = await decide(db, ADMIN, subject=sid, purpose=purpose, now=now)
    return "retention_expired" in d.reasons


async def _assert_due_exactly_at(db, sid, purpose, due_at):
    """Not due a second before `due_at`, due at it: in the sweep and in the gate alike."""
    before = await _due_ids(db, due_at - SECOND)
    at = await _due_ids(db, due_at)
    assert sid not in before and sid in at
    assert at[sid].due_at == due_at
    assert not await _gate_expired(db, sid, purpose, due_at - SECOND)
    assert await _gate_expired(db, sid, purpose, due_at)


async def test_contract_ended_on_29_february_plus_six_years(db):
    sid = await gs.subject(
        db, category="customer_contact", created_at=datetime(2015, 1, 5, tzinfo=UTC)
    )
    # Ended at noon on 29 Feb 2020 (UK time = UTC in winter): 2026 has no 29 Feb, so the
    # period ends on 28 Feb 2026, at the same time of day.
    await gs.basis(
        db,
        sid,
        "account_management",
        "contract",
        contract_start=datetime(2016, 1, 1, tzinfo=UTC),
        contract_end=datetime(2020, 2, 29, 12, 0, tzinfo=UTC),
    )
    await _assert_due_exactly_at(
        db, sid, "account_management", datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
    )


async def test_date_only_contract_end_runs_through_the_day_in_uk_time(db):
    # "contract_end": "2020-08-31" is stored as 1 Sep 2020 00:00 UK (23:00 UTC on 31 Aug):
    # the data falls due on 1 Sep 2026 00:00 UK time, not on 31 Aug at 23:00 UTC plus a
    # clamp, as month arithmetic in UTC would have it.
    sid = await gs.subject(
        db, category="supplier_contact", created_at=datetime(2015, 1, 5, tzinfo=UTC)
    )
    await gs.basis(
        db,
        sid,
        "account_management",
        "contract",
        contract_end=datetime(2020, 9, 1, tzinfo=LONDON),
    )
    await _assert_due_exactly_at(db, sid, "account_management", datetime(2026, 9, 1, tzinfo=LONDON))


async def test_month_end_clamps_for_a_configured_period(db, client, admin):
    r = await client.put(
        "/v1/retention-rules/visitor", json={"rule": "fixed_period", "months": 6}, headers=admin
    )
    assert r.status_code == 200, r.text
    # Created on 31 Aug: six months later there is no 31 Feb, so the last day of February.
    sid = await gs.subject(
        db, category="visitor", created_at=datetime(2025, 8, 31, 9, 30, tzinfo=UTC)
    )
    await gs.basis(db, sid, "day_to_day_communications", "legitimate_interests")
    await _assert_due_exactly_at(
        db, sid, "day_to_day_communications", datetime(2026, 2, 28, 10, 30, tzinfo=LONDON)
    )
    # A leap year: 31 Aug 2023 + 6 months is 29 Feb 2024.
    leap = await gs.subject(
        db, category="visitor", created_at=datetime(2023, 8, 31, 9, 30, tzinfo=UTC)
    )
    await gs.basis(db, leap, "day_to_day_communications", "legitimate_interests")
    await _assert_due_exactly_at(
        db, leap, "day_to_day_communications", datetime(2024, 2, 29, 10, 30, tzinfo=LONDON)
    )


async def test_no_contract_ever_counts_from_creation(db):
    sid = await gs.subject(
        db, category="advisor_contact", created_at=datetime(2020, 2, 29, 8, 0, tzinfo=UTC)
    )
    await gs.basis(db, sid, "day_to_day_communications", "legitimate_interests")
    await _assert_due_exactly_at(
        db, sid, "day_to_day_communications", datetime(2026, 2, 28, 8, 0, tzinfo=UTC)
    )


async def test_prospect_grace_period(db):
    ceased = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    sid = await gs.subject(db, category="prospect", interest_ceased_at=ceased)
    assert sid in await _due_ids(db, ceased)
    assert sid not in await _due_ids(db, ceased, grace_days=3)
    # Three days on the UK calendar, across the change to summer time (29 March 2026):
    # 12:00 GMT on 28 March + 3 days = 12:00 BST on 31 March (11:00 UTC).
    due = datetime(2026, 3, 31, 12, 0, tzinfo=LONDON)
    assert sid not in await _due_ids(db, due - SECOND, grace_days=3)
    assert (await _due_ids(db, due, grace_days=3))[sid].due_at == due
    never = await gs.subject(db, category="prospect")
    assert never not in await _due_ids(db, datetime(2100, 1, 1, tzinfo=UTC))


async def _old_visitor(db):
    return await gs.subject(
        db, category="visitor", created_at=datetime.now(UTC) - timedelta(days=800)
    )


async def _held_back_cases(db, client, crm):
    """One due subject per held-back reason, one due and free, one not yet due."""
    cases = {}
    cases["free"] = await _old_visitor(db)
    cases["restricted"] = await gs.subject(
        db, category="visitor", restricted=True, created_at=datetime.now(UTC) - timedelta(days=800)
    )
    cases["legal_obligation"] = await _old_visitor(db)
    await gs.basis(db, cases["legal_obligation"], "account_management", "legal_obligation")
    cases["running_contract"] = await _old_visitor(db)
    await gs.basis(db, cases["running_contract"], "contractual_communications", "contract")
    cases["open_rights_request"] = await _old_visitor(db)
    cases["request_by_email"] = await _old_visitor(db)
    cases["closed_request"] = await _old_visitor(db)
    cases["not_due"] = await gs.subject(db, category="visitor")
    await db.commit()
    r = await client.post(
        "/v1/rights-requests",
        json={"type": "access", "subject_id": str(cases["open_rights_request"])},
        headers=crm,
    )
    assert r.status_code == 201, r.text
    email = await gs.email_of(db, cases["request_by_email"])
    r = await client.post(
        "/v1/rights-requests", json={"type": "access", "email": email}, headers=crm
    )
    assert r.status_code == 201, r.text
    closed = await client.post(
        "/v1/rights-requests",
        json={"type": "access", "subject_id": str(cases["closed_request"])},
        headers=crm,
    )
    r = await client.post(
        f"/v1/rights-requests/{closed.json()['id']}/reject",
        json={"code": "manifestly_unfounded", "reason": "a test of a closed request"},
        headers=crm,
    )
    assert r.status_code == 200, r.text
    return cases


EXPECTED_HELD = {
    "restricted": ["restricted"],
    "legal_obligation": ["legal_obligation"],
    "running_contract": ["running_contract"],
    "open_rights_request": ["open_rights_request"],
    "request_by_email": ["open_rights_request"],
}


async def _snapshot(db):
    return (
        await db.execute(
            text(
                "SELECT (SELECT count(*) FROM audit_entries), (SELECT count(*) FROM changes),"
                " (SELECT count(*) FROM subjects WHERE erased_at IS NOT NULL),"
                " (SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM subjects s)"
            )
        )
    ).one()


async def test_dry_run_reports_due_and_held_back_and_changes_nothing(db, client, crm, admin):
    cases = await _held_back_cases(db, client, crm)
    before = await _snapshot(db)
    r = await client.post("/v1/retention/sweep?dry_run=true", headers=admin)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] is True and report["sweep_id"] is None and report["erased"] == 0
    items = {uuid.UUID(i["subject_id"]): i for i in report["items"]}
    for name, reasons in EXPECTED_HELD.items():
        assert items[cases[name]]["held_back"] == reasons, name
    for name in ("free", "closed_request"):
        assert items[cases[name]]["held_back"] == [], name
        assert items[cases[name]]["rule"] == "fixed_period"
        assert items[cases[name]]["category"] == "visitor"
    assert cases["not_due"] not in items
    assert report["due"] == len(items) and report["held_back"] == len(EXPECTED_HELD)
    assert await _snapshot(db) == before


async def test_real_run_erases_in_batches_and_records_the_sweep(db, client, crm, admin):
    cases = await _held_back_cases(db, client, crm)
    r = await client.post("/v1/retention/sweep?dry_run=false", headers=admin)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] is False and report["erased"] == 2
    erased = {
        row.id
        for row in await db.execute(
            text(
                "SELECT id FROM subjects WHERE erased_at IS NOT NULL AND email IS NULL AND name IS NULL"
            )
        )
    }
    assert erased & set(cases.values()) == {cases["free"], cases["closed_request"]}
    for name in EXPECTED_HELD:
        assert await gs.email_of(db, cases[name]) is not None, name
    entry = (
        await db.execute(
            text(
                "SELECT actor_role, entity_id, digest FROM audit_entries WHERE action = 'retention.sweep'"
            )
        )
    ).one()
    assert entry.actor_role == "admin" and entry.entity_id == report["sweep_id"]
    assert entry.digest["erased"] == 2 and entry.digest["held_back"] == len(EXPECTED_HELD)
    assert entry.digest["held_back_reasons"]["open_rights_request"] == 2
    kinds = list(
        (
            await db.execute(
                text("SELECT kind FROM changes WHERE subject_id = ANY(:ids)"),
                {"ids": [cases["free"], cases["closed_request"]]},
            )
        ).scalars()
    )
    assert kinds.count("subject.erased") == 2
    again = (await client.post("/v1/retention/sweep?dry_run=false", headers=admin)).json()
    assert again["erased"] == 0 and again["held_back"] == len(EXPECTED_HELD)


async def test_an_interrupted_run_resumes(db, conn):
    sids = [await _old_visitor(db) for _ in range(5)]
    await db.commit()
    maker = create_sessionmaker(conn, join_transaction_mode="create_savepoint")

    def stop_after_first_batch(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await sweep.run(maker, ADMIN, batch_size=2, progress=stop_after_first_batch)
    left = {r.subject_id for r in await find_due(db, now=datetime.now(UTC), grace_days=0)}
    assert len(left & set(sids)) == 3  # the first batch of two was committed
    seen = []
    report = await sweep.run(maker, ADMIN, batch_size=2, progress=seen.append)
    assert report.erased == 3 and seen == [2, 1]
    assert not {
        r.subject_id for r in await find_due(db, now=datetime.now(UTC), grace_days=0)
    } & set(sids)
    batches = (
        await db.execute(
            text("SELECT count(*) FROM audit_entries WHERE action = 'retention.sweep.batch'")
        )
    ).scalar()
    assert batches == 3


async def test_a_request_opened_after_the_scan_still_holds_back(db):
    sid = await _old_visitor(db)
    now = datetime.now(UTC)
    assert not (await _due_ids(db, now))[sid].held_back  # the scan: due and free
    await db.execute(
        text(
            "INSERT INTO rights_requests (id, type, subject_id, status, received_at, due_at,"
            " extended_months, created_by, updated_at) VALUES (gen_random_uuid(), 'erasure',"
            " :s, 'received', now(), current_date + 30, 0, 'test', now())"
        ),
        {"s": sid},
    )
    # The batch re-checks under its row locks before erasing.
    erased, held = await sweep._erase_batch(db, ADMIN, [sid], now=now, grace=0)
    assert erased == [] and [r.held_back for r in held] == [["open_rights_request"]]
    assert await gs.email_of(db, sid) is not None


async def test_only_admins_sweep(client, make_key):
    for role in ("crm", "website", "sync", "auditor"):
        headers = await make_key(role)
        for dry in ("true", "false"):
            r = await client.post(f"/v1/retention/sweep?dry_run={dry}", headers=headers)
            assert r.status_code == 403, (role, dry)
            assert r.headers["content-type"].startswith("application/problem+json")
    assert (await client.post("/v1/retention/sweep")).status_code == 401


async def test_retention_rules_are_catalogue_data(db, client, admin, auditor, crm):
    rules = (await client.get("/v1/retention-rules", headers=crm)).json()
    by_cat = {r["category"]: r for r in rules}
    assert by_cat["customer_contact"]["rule"] == "contract_end_plus"
    assert by_cat["customer_contact"]["months"] == 72
    assert by_cat["prospect"]["rule"] == "interest_ceased" and by_cat["prospect"]["grace_days"] == 0
    assert (
        await client.put(
            "/v1/retention-rules/visitor",
            json={"rule": "fixed_period", "months": 12},
            headers=auditor,
        )
    ).status_code == 403
    bad = await client.put(
        "/v1/retention-rules/visitor", json={"rule": "fixed_period"}, headers=admin
    )
    assert bad.status_code == 422
    assert (
        await client.put(
            "/v1/retention-rules/nobody", json={"rule": "fixed_period", "months": 1}, headers=admin
        )
    ).status_code == 404
    # Shortening the period takes effect in the gate at once.
    sid = await gs.subject(
        db, category="visitor", created_at=datetime.now(UTC) - timedelta(days=100)
    )
    await gs.basis(db, sid, "day_to_day_communications", "legitimate_interests")
    await db.commit()
    assert not await _gate_expired(db, sid, "day_to_day_communications", datetime.now(UTC))
    r = await client.put(
        "/v1/retention-rules/visitor", json={"rule": "fixed_period", "months": 3}, headers=admin
    )
    assert r.status_code == 200 and r.json()["months"] == 3
    assert await _gate_expired(db, sid, "day_to_day_communications", datetime.now(UTC))
    row = (
        await db.execute(text("SELECT retention_months FROM categories WHERE key = 'visitor'"))
    ).scalar()
    assert row == 3
    audited = (
        await db.execute(
            text(
                "SELECT digest FROM audit_entries WHERE action = 'retention_rules.put' ORDER BY id DESC LIMIT 1"
            )
        )
    ).scalar()
    assert audited["months"] == 3 and audited["previous"]["months"] == 24
