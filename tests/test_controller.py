"""The controller's identity as catalogue data (DOMAIN.md "The controller"): seeded from the
policy, read by every role, replaced by an admin (audited, validated), and shown from the
row on receipts, consent proofs, the record of processing, access reports and the person's
pages. Over HTTP, with assertions on the stored rows."""

import re
import uuid

from sqlalchemy import text

from tests.conftest import new_subject
from tests.test_consent import give

NEW = {
    "name": "Acme Widgets Ltd",
    "email": "privacy@acme.example",
    "address": "1 Main Street, Leeds, LS1 1AA, UK",
    "phone": "+44 113 496 0000",
    "dpo_email": "dpo@acme.example",
    "supervisory_authority": "Information Commissioner's Office (ICO), https://ico.org.uk",
}
STORED = "SELECT name, email, address, phone, dpo_email, representative, supervisory_authority"


async def _row(db):
    return (await db.execute(text(f"{STORED} FROM controller"))).one()._asdict()


async def _audit(db):
    return (
        await db.execute(
            text(
                "SELECT actor_role, entity, digest FROM audit_entries"
                " WHERE action = 'controller.put' ORDER BY id"
            )
        )
    ).all()


async def test_every_role_reads_the_controller_seeded_from_the_policy(client, make_key, db):
    rows = (await db.execute(text("SELECT count(*) FROM controller"))).scalar()
    assert rows == 1
    for role in ("crm", "website", "sync", "auditor", "admin"):
        r = await client.get("/v1/controller", headers=await make_key(role))
        assert r.status_code == 200, (role, r.text)
    body = r.json()
    # §1/§11: the name, the address and the contact for data matters; no DPO is named.
    assert body["name"] == "JI Group"
    assert body["email"] == "datacontroller@jisoftware.co.uk"
    assert body["address"] == "Kings House, 245 Ampthill Road, Bedford, MK42 9AZ, UK"
    assert body["phone"] == "+44-(0)1234-214004"
    assert body["dpo_email"] is None and body["representative"] is None
    assert "Information Commissioner" in body["supervisory_authority"]
    assert {k: body[k] for k in await _row(db)} == await _row(db)
    assert (await client.get("/v1/controller")).status_code == 401


async def test_an_admin_replaces_the_controller_and_it_is_audited(client, admin, db):
    before = await _row(db)
    r = await client.put("/v1/controller", json=NEW, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == NEW["name"] and r.json()["representative"] is None
    assert await _row(db) == {**NEW, "representative": None}
    [entry] = await _audit(db)
    assert entry.actor_role == "admin" and entry.entity == "controller"
    assert entry.digest["name"] == NEW["name"]
    assert entry.digest["previous"]["name"] == before["name"]
    # A PUT replaces the whole identity: an optional field left out becomes null.
    r = await client.put("/v1/controller", json={**NEW, "dpo_email": None}, headers=admin)
    assert r.status_code == 200 and (await _row(db))["dpo_email"] is None
    assert len(await _audit(db)) == 2


BAD = {
    "empty name": {**NEW, "name": "  "},
    "invalid e-mail": {**NEW, "email": "not-an-address"},
    "invalid DPO e-mail": {**NEW, "dpo_email": "dpo at acme"},
    "display name in the e-mail": {**NEW, "email": "Acme <privacy@acme.example>"},
    "no supervisory authority": {k: v for k, v in NEW.items() if k != "supervisory_authority"},
    "control character": {**NEW, "name": "Acme\x1b[31m"},
    "unknown field": {**NEW, "vat_number": "GB123"},
    "letters in the phone": {**NEW, "phone": "call us"},
}


async def test_bad_input_is_a_problem_and_changes_nothing(client, admin, make_key, db):
    before = await _row(db)
    for case, body in BAD.items():
        r = await client.put("/v1/controller", json=body, headers=admin)
        assert r.status_code == 422, (case, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), case
    for role in ("crm", "website", "sync", "auditor"):
        r = await client.put("/v1/controller", json=NEW, headers=await make_key(role))
        assert r.status_code == 403, role
        assert r.headers["content-type"].startswith("application/problem+json")
    assert await _row(db) == before
    assert await _audit(db) == []


async def _consented_subject(client, crm):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await client.put(
        f"/v1/subjects/{s['id']}/bases/content_subscriptions",
        json={"basis": "consent"},
        headers=crm,
    )
    r = await client.post("/v1/consent-events", json=give(s["id"]), headers=crm)
    assert r.status_code == 201, r.text
    return s, r.json()


async def test_receipts_and_proofs_issued_afterwards_name_the_new_controller(client, crm, admin):
    s, earlier = await _consented_subject(client, crm)
    assert earlier["receipt"]["piiControllers"][0]["piiController"] == "JI Group"
    assert (await client.put("/v1/controller", json=NEW, headers=admin)).status_code == 200

    _, event = await _consented_subject(client, crm)  # the consent write's own receipt
    controller = event["receipt"]["piiControllers"][0]
    assert controller["piiController"] == NEW["name"] and controller["contact"] == NEW["email"]
    assert NEW["email"] in event["receipt"]["services"][0]["purposes"][0]["termination"]
    again = await client.get(f"/v1/consent-events/{earlier['id']}/receipt", headers=crm)
    assert again.json()["piiControllers"][0]["piiController"] == NEW["name"]
    proof = await client.get(f"/v1/subjects/{s['id']}/consent-proof", headers=crm)
    assert proof.status_code == 200, proof.text
    assert proof.json()["controller"] == {**NEW, "representative": None}
    assert proof.json()["events"][0]["receipt"]["piiControllers"][0]["address"] == NEW["address"]
    export = await client.get("/v1/consent-events/export?format=csv", headers=crm)
    assert NEW["name"] in export.text and "JI Group" not in export.text


async def test_reports_issued_afterwards_name_the_new_controller(client, crm, admin, auditor):
    assert (await client.put("/v1/controller", json=NEW, headers=admin)).status_code == 200
    ropa = (await client.get("/v1/reports/processing-activities", headers=auditor)).json()
    assert ropa["controller"]["name"] == NEW["name"]
    assert ropa["controller"]["dpo_email"] == NEW["dpo_email"]
    page = await client.get(
        "/v1/reports/processing-activities", headers={**auditor, "Accept": "text/html"}
    )
    assert NEW["name"] in page.text and NEW["dpo_email"] in page.text
    assert "JI Group" not in page.text

    s, _ = await _consented_subject(client, crm)
    req = (
        await client.post(
            "/v1/rights-requests", json={"type": "access", "subject_id": s["id"]}, headers=crm
        )
    ).json()
    await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity",
        json={"method": "email", "note": "replied from the address on file"},
        headers=crm,
    )
    done = await client.post(f"/v1/rights-requests/{req['id']}/complete", json={}, headers=crm)
    assert done.status_code == 200, done.text
    report = (
        await client.get(f"/v1/rights-requests/{req['id']}/export?format=json", headers=crm)
    ).json()
    assert report["controller"]["name"] == NEW["name"]
    assert report["controller"]["email"] == NEW["email"]
    assert (
        report["consent_history"][0]["receipt"]["piiControllers"][0]["piiController"]
        == (NEW["name"])
    )


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def test_the_persons_pages_name_the_new_controller(client, crm, admin, db):
    s, _ = await _consented_subject(client, crm)
    await client.put(
        f"/v1/subjects/{s['id']}/bases/business_development",
        json={"basis": "consent"},
        headers=crm,
    )
    links = (await client.post(f"/v1/subjects/{s['id']}/links", json={}, headers=crm)).json()
    assert (await client.put("/v1/controller", json=NEW, headers=admin)).status_code == 200

    preferences = await client.get(_path(links["preference_url"]))
    assert preferences.status_code == 200
    assert f'<p class="brand">{NEW["name"]}</p>' in preferences.text
    assert f"mailto:{NEW['dpo_email']}" in preferences.text
    # The notice shown beside "give consent" names the controller as it is now.
    assert f"I agree that {NEW['name']} may use" in preferences.text
    assert "JI Group" not in preferences.text
    unsubscribe = await client.get(_path(links["unsubscribe_url"]))
    assert f"marketing e-mails from {NEW['name']}" in unsubscribe.text
    not_a_link = await client.get(f"/p/{uuid.uuid4().hex}")
    assert not_a_link.status_code == 404 and NEW["name"] in not_a_link.text

    # Giving consent from the page stores the notice with the new name.
    p = _path(links["preference_url"])
    csrf = re.search(r'name="csrf" value="([^"]+)"', preferences.text)
    sha = re.search(
        r'name="purpose" value="business_development">\s*<input type="hidden" '
        r'name="notice_sha256" value="([0-9a-f]{64})"',
        preferences.text,
    )
    assert csrf and sha, preferences.text
    form = {"csrf": csrf.group(1), "purpose": "business_development", "policy_version": "1"}
    r = await client.post(p + "/give", data={**form, "notice_sha256": sha.group(1)})
    assert r.status_code == 303
    notice = (
        await db.execute(
            text(
                "SELECT n.text FROM consent_events e JOIN consent_notices n"
                " ON n.sha256 = e.notice_sha256"
                " WHERE e.subject_id = :s AND e.purpose = 'business_development'"
            ),
            {"s": s["id"]},
        )
    ).scalar_one()
    assert notice.startswith(f"I agree that {NEW['name']} may use")
