"""The decision gate: each rule of DOMAIN.md allows and denies, reasons combine, decisions
are stored and audited, and a decision is one round trip."""

import asyncio
import importlib.util
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.core.auth import ROLE_SCOPES, Principal
from app.models.audit import AuditEntry
from app.models.decision import Decision
from app.services.gate.decisions import decide, decide_batch
from tests import gate_state as gs
from tests.driver_log import statements_sent
from tests.gate_state import NOW

CRM = Principal(uuid.uuid4(), "test-crm", "crm", ROLE_SCOPES["crm"])


async def reasons(db, subject, purpose, recipient=None):
    d = await decide(db, CRM, subject=subject, purpose=purpose, recipient=recipient, now=NOW)
    assert d.allowed == (d.reasons == [])
    return d.reasons


async def test_rule1_unknown_and_erased_subjects(db):
    assert await reasons(db, uuid.uuid4(), "day_to_day_communications") == ["subject_unknown"]
    assert await reasons(db, "nobody@example.com", "day_to_day_communications") == [
        "subject_unknown"
    ]
    erased = await gs.subject(db, erased=True)
    await gs.basis(db, erased, "day_to_day_communications", "contract")
    assert await reasons(db, erased, "day_to_day_communications") == ["subject_erased"]


async def test_rule2_restriction_denies(db):
    sid = await gs.subject(db, restricted=True)
    await gs.basis(db, sid, "account_management", "legal_obligation")
    assert await reasons(db, sid, "account_management") == ["restricted"]
    free = await gs.subject(db)
    await gs.basis(db, free, "account_management", "legal_obligation")
    assert await reasons(db, free, "account_management") == []


async def test_rule3_retention_per_category(db):
    # customer: contract end + 6 years
    old = await gs.subject(db, category="customer_contact")
    await gs.basis(
        db, old, "account_management", "contract", contract_end=NOW - timedelta(days=365 * 6 + 10)
    )
    assert await reasons(db, old, "account_management") == ["retention_expired", "contract_ended"]
    recent = await gs.subject(db, category="supplier_contact")
    await gs.basis(
        db, recent, "account_management", "contract", contract_end=NOW - timedelta(days=365 * 5)
    )
    await gs.basis(db, recent, "day_to_day_communications", "legitimate_interests")
    assert await reasons(db, recent, "day_to_day_communications") == []
    # an open contract keeps the data
    open_ = await gs.subject(db, category="advisor_contact")
    await gs.basis(db, open_, "account_management", "contract", contract_end=None)
    await gs.basis(
        db,
        open_,
        "contractual_communications",
        "contract",
        contract_end=NOW - timedelta(days=365 * 7),
    )
    await gs.basis(db, open_, "day_to_day_communications", "legitimate_interests")
    assert await reasons(db, open_, "day_to_day_communications") == []
    # prospect: until interest is known to have ceased
    ceased = await gs.subject(db, category="prospect", interest_ceased_at=NOW - timedelta(days=1))
    await gs.basis(db, ceased, "business_development", "legitimate_interests")
    assert await reasons(db, ceased, "business_development") == ["retention_expired"]
    later = await gs.subject(db, category="prospect", interest_ceased_at=NOW + timedelta(days=1))
    await gs.basis(db, later, "business_development", "legitimate_interests")
    assert await reasons(db, later, "business_development") == []
    # others: a configured period (24 months) from creation
    visitor = await gs.subject(db, category="visitor", created_at=NOW - timedelta(days=800))
    await gs.basis(db, visitor, "day_to_day_communications", "legitimate_interests")
    assert await reasons(db, visitor, "day_to_day_communications") == ["retention_expired"]


async def test_rule4_missing_or_disallowed_basis(db):
    sid = await gs.subject(db)
    assert await reasons(db, sid, "contractual_communications") == ["no_lawful_basis"]
    # An admin narrowed the purpose after the basis was recorded: the gate still checks.
    await gs.basis(db, sid, "surveys", "legitimate_interests")
    assert await reasons(db, sid, "surveys") == []
    await db.execute(text("UPDATE purposes SET allowed_bases = '{consent}' WHERE key = 'surveys'"))
    assert await reasons(db, sid, "surveys") == ["basis_not_allowed"]


async def test_rule5_consent_must_be_given_and_not_withdrawn(db):
    sid = await gs.subject(db)
    await gs.basis(db, sid, "content_subscriptions", "consent")
    assert await reasons(db, sid, "content_subscriptions") == ["consent_missing"]
    await gs.consent(db, sid, "content_subscriptions", "given")
    assert await reasons(db, sid, "content_subscriptions") == []
    await gs.consent(db, sid, "content_subscriptions", "withdrawn")
    assert await reasons(db, sid, "content_subscriptions") == ["consent_withdrawn"]


async def test_rule6_contract_must_be_running(db):
    sid = await gs.subject(db)
    await gs.basis(
        db,
        sid,
        "contractual_communications",
        "contract",
        contract_start=NOW - timedelta(days=10),
        contract_end=NOW + timedelta(days=10),
    )
    assert await reasons(db, sid, "contractual_communications") == []
    await gs.basis(
        db, sid, "contractual_communications", "contract", contract_end=NOW - timedelta(days=1)
    )
    assert await reasons(db, sid, "contractual_communications") == ["contract_ended"]
    await gs.basis(
        db, sid, "contractual_communications", "contract", contract_start=NOW + timedelta(days=1)
    )
    assert await reasons(db, sid, "contractual_communications") == ["contract_ended"]


async def test_rule7_objection_to_legitimate_interests(db):
    sid = await gs.subject(db)
    await gs.basis(db, sid, "business_development", "legitimate_interests")
    await gs.basis(db, sid, "surveys", "legitimate_interests")
    await gs.objection(db, sid, "surveys")
    assert await reasons(db, sid, "surveys") == ["objected"]
    assert await reasons(db, sid, "business_development") == []


async def test_rule8_marketing_opt_out_is_absolute(db):
    sid = await gs.subject(db)
    email = await gs.email_of(db, sid)
    await gs.basis(db, sid, "email_campaigns", "consent")
    await gs.consent(db, sid, "email_campaigns", "given")
    await gs.basis(db, sid, "surveys", "legitimate_interests")
    assert await reasons(db, sid, "email_campaigns") == []
    await gs.opt_out(db, email, channel="all")
    assert await reasons(db, sid, "email_campaigns") == ["marketing_opt_out"]
    # surveys are not direct marketing
    assert await reasons(db, sid, "surveys") == []


async def test_rule9_transfers_outside_the_eea_need_consent_or_a_safeguard(db):
    sid = await gs.subject(db)
    await gs.basis(db, sid, "partner_referral", "legitimate_interests")
    assert await reasons(db, sid, "partner_referral", "maximizer") == []  # UK
    assert await reasons(db, sid, "partner_referral", "bpmonline") == ["transfer_not_permitted"]
    await gs.consent(db, sid, "international_transfer", "given", recipient="bpmonline")
    assert await reasons(db, sid, "partner_referral", "bpmonline") == []
    await gs.consent(db, sid, "international_transfer", "withdrawn", recipient="bpmonline")
    assert await reasons(db, sid, "partner_referral", "bpmonline") == ["transfer_not_permitted"]
    await db.execute(
        text(
            "UPDATE recipients SET transfer_safeguard = 'adequacy_decision' WHERE key = 'bpmonline'"
        )
    )
    assert await reasons(db, sid, "partner_referral", "bpmonline") == []


async def test_every_reason_is_returned_in_rule_order(db):
    sid = await gs.subject(db, restricted=True)
    email = await gs.email_of(db, sid)
    await gs.basis(db, sid, "email_campaigns", "consent")
    await gs.consent(db, sid, "email_campaigns", "withdrawn")
    await gs.opt_out(db, email)
    assert await reasons(db, sid, "email_campaigns", "mailchimp") == [
        "restricted",
        "consent_withdrawn",
        "marketing_opt_out",
        "transfer_not_permitted",
    ]


async def test_decisions_are_stored_and_audited(db):
    sid = await gs.subject(db)
    d = await decide(db, CRM, subject=sid, purpose="surveys", now=NOW)
    row = await db.get(Decision, d.id)
    assert row is not None and row.subject_id == sid and row.allowed is False
    assert row.reasons == ["no_lawful_basis"] and row.requester_name == "test-crm"
    entry = (
        await db.execute(select(AuditEntry).where(AuditEntry.entity_id == str(d.id)))
    ).scalar_one()
    assert entry.action == "decision.create" and entry.digest["reasons"] == ["no_lawful_basis"]


async def test_decision_by_email_never_stores_the_email(db):
    d = await decide(db, CRM, subject="Ghost@Example.com", purpose="surveys", now=NOW)
    dump = (
        await db.execute(
            text("SELECT row_to_json(d)::text FROM decisions d WHERE id = :i"), {"i": d.id}
        )
    ).scalar_one()
    assert "ghost" not in dump.lower()


async def test_decision_ids_are_time_ordered_version_7(db):
    """Decision ids are UUID version 7 (migration 0014): they start with the millisecond
    they were made in, so a later decision's id sorts after an earlier one's."""
    sid = await gs.subject(db)
    first = await decide(db, CRM, subject=sid, purpose="surveys", now=NOW)
    await asyncio.sleep(0.005)
    batch = await decide_batch(db, CRM, subjects=[sid, sid], purpose="surveys", now=NOW)
    ids = [first.id] + [item.id for item in batch]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 3 and first.id < min(item.id for item in batch)
    assert abs((first.id.int >> 80) - time.time() * 1000) < 60_000  # ms since 1970


async def test_the_version_7_layout_built_before_postgresql_18(db):
    """Before PostgreSQL 18 (the compatibility run on 15), `time_ordered_uuid()` builds the
    layout from a random UUID: run here on whatever server the suite has."""
    path = Path(__file__).parent.parent / "migrations/versions/0014_time_ordered_decision_ids.py"
    spec = importlib.util.spec_from_file_location("migration_0014", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    before = int(time.time() * 1000)
    made = [(await db.execute(text(migration.BUILT))).scalar_one() for _ in range(50)]
    after = int(time.time() * 1000)
    assert len(set(made)) == 50
    for made_id in made:
        assert made_id.version == 7 and made_id.variant == uuid.RFC_4122
        assert before - 1000 <= made_id.int >> 80 <= after + 1000


async def test_a_decision_is_one_round_trip(db):
    sid = await gs.subject(db)
    await decide(db, CRM, subject=sid, purpose="surveys", now=NOW)  # savepoint already open
    async with statements_sent(db) as statements:
        await decide(
            db, CRM, subject=sid, purpose="email_campaigns", recipient="mailchimp", now=NOW
        )
        await decide_batch(db, CRM, subjects=[sid, "x@example.com"], purpose="surveys", now=NOW)
    assert len(statements) == 2, statements
    assert all("INSERT INTO audit_entries" in s for s in statements)


async def test_unknown_purpose_or_recipient_is_422(client, crm, db):
    before = (await db.execute(select(func.count()).select_from(Decision))).scalar_one()
    sid = str(await gs.subject(db))
    await db.commit()
    r = await client.post(
        "/v1/decisions", json={"subject_id": sid, "purpose": "mind_reading"}, headers=crm
    )
    assert r.status_code == 422 and r.json()["field"] == "purpose"
    r = await client.post(
        "/v1/decisions",
        json={"subject_id": sid, "purpose": "surveys", "recipient": "nsa"},
        headers=crm,
    )
    assert r.status_code == 422 and r.json()["field"] == "recipient"
    after = (await db.execute(select(func.count()).select_from(Decision))).scalar_one()
    assert after == before


async def test_decision_endpoint_shape_and_validation(client, crm, db):
    sid = await gs.subject(db)
    await gs.basis(db, sid, "surveys", "legitimate_interests")
    await db.commit()
    r = await client.post(
        "/v1/decisions", json={"subject_id": str(sid), "purpose": "surveys"}, headers=crm
    )
    assert r.status_code == 200
    body = r.json()
    assert body["allowed"] is True and body["basis"] == "legitimate_interests"
    assert body["reasons"] == [] and body["id"] and body["decided_at"]
    deny = await client.post(
        "/v1/decisions", json={"email": "nobody@example.com", "purpose": "surveys"}, headers=crm
    )
    assert deny.status_code == 200 and deny.json()["reasons"] == ["subject_unknown"]
    for bad in (
        {"purpose": "surveys"},
        {"subject_id": str(sid), "email": "a@b.co", "purpose": "surveys"},
        {"subject_id": str(sid), "purpose": "surveys", "name": "x"},
    ):
        assert (await client.post("/v1/decisions", json=bad, headers=crm)).status_code == 422


async def test_batch_keeps_order_and_limits(client, crm, db):
    a = await gs.subject(db)
    await gs.basis(db, a, "surveys", "legitimate_interests")
    b = await gs.subject(db, restricted=True)
    email_b = await gs.email_of(db, b)
    await db.commit()
    refs = [str(a), "missing@example.com", email_b.upper(), str(uuid.uuid4())]
    r = await client.post(
        "/v1/decisions/batch", json={"purpose": "surveys", "subjects": refs}, headers=crm
    )
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["subject"].lower() for i in items] == [r.lower() for r in refs]
    assert [i["reasons"] for i in items] == [
        [],
        ["subject_unknown"],
        ["restricted", "no_lawful_basis"],
        ["subject_unknown"],
    ]
    assert items[2]["subject_id"] == str(b)
    too_many = {"purpose": "surveys", "subjects": [str(uuid.uuid4()) for _ in range(1001)]}
    assert (await client.post("/v1/decisions/batch", json=too_many, headers=crm)).status_code == 422


@pytest.mark.parametrize("role", ["website", "sync"])
async def test_website_and_sync_may_ask(client, make_key, role):
    headers = await make_key(role)
    r = await client.post(
        "/v1/decisions", json={"email": "a@example.com", "purpose": "surveys"}, headers=headers
    )
    assert r.status_code == 200


async def test_auditor_reads_decisions_but_cannot_ask(client, crm, auditor):
    await client.post(
        "/v1/decisions", json={"email": "a@example.com", "purpose": "surveys"}, headers=crm
    )
    assert (
        await client.post(
            "/v1/decisions", json={"email": "a@example.com", "purpose": "surveys"}, headers=auditor
        )
    ).status_code == 403
    listed = (await client.get("/v1/decisions?purpose=surveys", headers=auditor)).json()
    assert listed["items"] and listed["items"][0]["purpose"] == "surveys"


async def test_retention_counts_ended_contracts_and_falls_back_to_creation(client, crm, db):
    # A customer whose contract basis was ended years ago through the API.
    sid = await gs.subject(db, category="customer_contact")
    await gs.basis(db, sid, "day_to_day_communications", "legitimate_interests")
    await db.execute(
        text(
            "INSERT INTO lawful_basis_history (subject_id, purpose, action, value, previous, actor, at)"
            " VALUES (:s, 'account_management', 'ended', NULL,"
            " jsonb_build_object('basis', 'contract', 'contract_end', NULL), 'crm', :at)"
        ),
        {"s": sid, "at": NOW - timedelta(days=365 * 6 + 30)},
    )
    assert await reasons(db, sid, "day_to_day_communications") == ["retention_expired"]
    # No contract ever: six years from when we got the data.
    old = await gs.subject(
        db, category="supplier_contact", created_at=NOW - timedelta(days=365 * 7)
    )
    await gs.basis(db, old, "day_to_day_communications", "legitimate_interests")
    assert await reasons(db, old, "day_to_day_communications") == ["retention_expired"]
    young = await gs.subject(db, category="supplier_contact", created_at=NOW - timedelta(days=365))
    await gs.basis(db, young, "day_to_day_communications", "legitimate_interests")
    assert await reasons(db, young, "day_to_day_communications") == []


async def test_an_erased_subject_has_no_basis_in_its_decision(db):
    erased = await gs.subject(db, erased=True)
    await gs.basis(db, erased, "surveys", "legitimate_interests")
    d = await decide(db, CRM, subject=erased, purpose="surveys", now=NOW)
    assert d.reasons == ["subject_erased"] and d.basis is None
