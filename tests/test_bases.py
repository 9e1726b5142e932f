"""Lawful bases per subject and purpose, with history."""

import uuid

from sqlalchemy import text

from tests.conftest import new_subject


async def _subject(client, crm):
    return (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()


async def test_set_replace_list_and_history(client, crm, auditor, db):
    s = await _subject(client, crm)
    url = f"/v1/subjects/{s['id']}/bases/account_management"
    r = await client.put(
        url,
        json={"basis": "contract", "contract_ref": "C-1", "contract_end": "2030-12-31"},
        headers=crm,
    )
    assert r.status_code == 200, r.text
    # a date-only end runs through that day (UK time): stored as the next midnight
    assert r.json()["contract_end"].startswith("2031-01-01T00:00:00")
    r = await client.put(
        url, json={"basis": "legal_obligation", "obligation": "VAT records"}, headers=crm
    )
    assert r.status_code == 200 and r.json()["basis"] == "legal_obligation"
    listed = (await client.get(f"/v1/subjects/{s['id']}/bases", headers=auditor)).json()["items"]
    assert [(b["purpose"], b["basis"]) for b in listed] == [
        ("account_management", "legal_obligation")
    ]
    history = (await client.get(f"{url}/history", headers=crm)).json()["items"]
    assert [h["action"] for h in history] == ["set", "set"]
    assert history[1]["previous"]["basis"] == "contract"
    assert history[1]["previous"]["contract_ref"] == "C-1" and history[1]["actor"]
    assert (await client.delete(url, headers=crm)).status_code == 204
    assert (await client.delete(url, headers=crm)).status_code == 404
    history = (await client.get(f"{url}/history", headers=crm)).json()["items"]
    assert (
        history[-1]["action"] == "ended" and history[-1]["previous"]["basis"] == "legal_obligation"
    )
    rows = (
        await db.execute(
            text("SELECT count(*) FROM lawful_bases WHERE subject_id = :s"), {"s": s["id"]}
        )
    ).scalar()
    assert rows == 0


async def test_a_basis_the_purpose_does_not_allow_is_422_naming_the_allowed(client, crm, db):
    s = await _subject(client, crm)
    r = await client.put(
        f"/v1/subjects/{s['id']}/bases/content_subscriptions",
        json={"basis": "legitimate_interests", "lia_ref": "L"},
        headers=crm,
    )
    assert r.status_code == 422
    assert r.json()["allowed_bases"] == ["consent"] and "consent" in r.json()["detail"]
    rows = (
        await db.execute(
            text("SELECT count(*) FROM lawful_bases WHERE subject_id = :s"), {"s": s["id"]}
        )
    ).scalar()
    assert rows == 0


async def test_each_basis_needs_its_detail(client, crm):
    s = await _subject(client, crm)
    url = f"/v1/subjects/{s['id']}/bases/day_to_day_communications"
    assert (await client.put(url, json={"basis": "contract"}, headers=crm)).status_code == 422
    assert (
        await client.put(url, json={"basis": "legitimate_interests"}, headers=crm)
    ).status_code == 422
    bad_dates = {
        "basis": "contract",
        "contract_ref": "C",
        "contract_start": "2027-01-01",
        "contract_end": "2026-01-01",
    }
    assert (await client.put(url, json=bad_dates, headers=crm)).status_code == 422
    assert (
        await client.put(url, json={"basis": "contract", "contract_ref": "C", "x": 1}, headers=crm)
    ).status_code == 422


async def test_unknown_purpose_subject_and_erased(client, crm, db):
    s = await _subject(client, crm)
    body = {"basis": "consent"}
    assert (
        await client.put(f"/v1/subjects/{s['id']}/bases/mind_reading", json=body, headers=crm)
    ).status_code == 404
    assert (
        await client.put(
            "/v1/subjects/00000000-0000-0000-0000-000000000000/bases/surveys",
            json=body,
            headers=crm,
        )
    ).status_code == 404
    await db.execute(text("UPDATE subjects SET erased_at = now() WHERE id = :i"), {"i": s["id"]})
    await db.commit()
    assert (
        await client.put(f"/v1/subjects/{s['id']}/bases/surveys", json=body, headers=crm)
    ).status_code == 409


async def test_roles_for_bases(client, make_key):
    for role in ("website", "sync"):
        headers = await make_key(role)
        r = await client.get(
            "/v1/subjects/00000000-0000-0000-0000-000000000000/bases", headers=headers
        )
        assert r.status_code == 403


async def test_a_contract_ending_today_still_runs_today(client, crm, db):
    from datetime import UTC, datetime

    from app.core.auth import ROLE_SCOPES, Principal
    from app.services.gate.decisions import decide

    s = await _subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/contractual_communications",
        json={"basis": "contract", "contract_ref": "C", "contract_end": "2026-06-15"},
        headers=crm,
    )
    who = Principal(uuid.uuid4(), "t", "crm", ROLE_SCOPES["crm"])
    on_the_day = datetime(2026, 6, 15, 22, 30, tzinfo=UTC)  # 23:30 in London
    d = await decide(
        db, who, subject=uuid.UUID(s["id"]), purpose="contractual_communications", now=on_the_day
    )
    assert d.allowed is True
    next_day = datetime(2026, 6, 15, 23, 30, tzinfo=UTC)
    d = await decide(
        db, who, subject=uuid.UUID(s["id"]), purpose="contractual_communications", now=next_day
    )
    assert d.reasons == ["contract_ended"]
