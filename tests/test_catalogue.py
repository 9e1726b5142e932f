"""Catalogues seeded from the policy and edited by an admin."""

from sqlalchemy import select

from app.models.catalogue import Purpose, Recipient


async def _all(client, path, headers):
    return {i["key"]: i for i in (await client.get(path, headers=headers)).json()["items"]}


async def test_seeded_purposes_match_the_policy(client, crm):
    purposes = await _all(client, "/v1/purposes", crm)
    assert len(purposes) == 9
    assert purposes["content_subscriptions"]["allowed_bases"] == ["consent"]
    assert purposes["account_management"]["allowed_bases"] == ["contract", "legal_obligation"]
    assert purposes["email_campaigns"]["direct_marketing"] is True
    assert purposes["surveys"]["direct_marketing"] is False
    assert purposes["international_transfer"]["allowed_bases"] == ["consent"]


async def test_seeded_recipients_categories_sources_policy(client, crm):
    recipients = await _all(client, "/v1/recipients", crm)
    assert recipients["maximizer"]["inside_eea_uk"] is True
    assert recipients["bpmonline"]["transfer_safeguard"] == "explicit_consent"
    assert recipients["mailchimp"]["country"] == "US"
    assert "surveys" in recipients["surveymonkey"]["purposes"]
    categories = await _all(client, "/v1/categories", crm)
    assert categories["customer_contact"]["retention_months"] == 72
    assert categories["prospect"]["retention_rule"] == "interest_ceased"
    assert set(await _all(client, "/v1/sources", crm)) == {
        "enquiry",
        "event",
        "third_party_introduction",
        "employer_nominated",
        "product_use",
        "public_source",
    }
    policies = (await client.get("/v1/policies", headers=crm)).json()["items"]
    assert policies[0]["version"] == "1" and len(policies[0]["text_sha256"]) == 64


async def test_admin_creates_and_replaces_a_purpose(client, admin, db):
    body = {
        "description": "Newsletter",
        "allowed_bases": ["consent", "consent"],
        "direct_marketing": True,
    }
    r = await client.put("/v1/purposes/newsletter", json=body, headers=admin)
    assert r.status_code == 201 and r.json()["allowed_bases"] == ["consent"]
    body["allowed_bases"] = ["legitimate_interests"]
    r = await client.put("/v1/purposes/newsletter", json=body, headers=admin)
    assert r.status_code == 200
    row = (await db.execute(select(Purpose).where(Purpose.key == "newsletter"))).scalar_one()
    assert row.allowed_bases == ["legitimate_interests"]


async def test_purpose_validation(client, admin):
    ok = {"description": "x", "allowed_bases": ["consent"], "direct_marketing": False}
    assert (await client.put("/v1/purposes/Bad-Key", json=ok, headers=admin)).status_code == 422
    bad_basis = {**ok, "allowed_bases": ["vital_interests_of_the_ceo"]}
    assert (await client.put("/v1/purposes/x", json=bad_basis, headers=admin)).status_code == 422
    assert (
        await client.put("/v1/purposes/x", json={**ok, "allowed_bases": []}, headers=admin)
    ).status_code == 422
    assert (
        await client.put("/v1/purposes/x", json={**ok, "extra": 1}, headers=admin)
    ).status_code == 422


async def test_recipient_defaults_to_explicit_consent_outside_eea(client, admin, db):
    body = {
        "name": "Far Away Inc",
        "role": "processor",
        "country": "US",
        "inside_eea_uk": False,
        "purposes": ["surveys"],
    }
    r = await client.put("/v1/recipients/faraway", json=body, headers=admin)
    assert r.status_code == 201 and r.json()["transfer_safeguard"] == "explicit_consent"
    body["transfer_safeguard"] = "adequacy_decision"
    r = await client.put("/v1/recipients/faraway", json=body, headers=admin)
    assert r.json()["transfer_safeguard"] == "adequacy_decision"
    row = await db.get(Recipient, "faraway")
    await db.refresh(row)
    assert row.transfer_safeguard == "adequacy_decision"
    bad = await client.put(
        "/v1/recipients/faraway", json={**body, "purposes": ["nope"]}, headers=admin
    )
    assert bad.status_code == 422 and "nope" in bad.json()["detail"]


async def test_policies_create_and_duplicate(client, admin):
    body = {
        "version": "2.0",
        "published_at": "2026-01-01T00:00:00Z",
        "url": "https://example.com/privacy",
        "text_sha256": "ab" * 32,
    }
    r = await client.post("/v1/policies", json=body, headers=admin)
    assert r.status_code == 201 and r.json()["version"] == "2.0"
    dup = await client.post("/v1/policies", json=body, headers=admin)
    assert dup.status_code == 409
    bad = await client.post(
        "/v1/policies", json={**body, "version": "3", "text_sha256": "zz"}, headers=admin
    )
    assert bad.status_code == 422


async def test_catalogue_pagination(client, crm):
    first = (await client.get("/v1/purposes?limit=4", headers=crm)).json()
    assert len(first["items"]) == 4 and first["next_cursor"]
    second = (
        await client.get(f"/v1/purposes?limit=4&cursor={first['next_cursor']}", headers=crm)
    ).json()
    keys = [p["key"] for p in first["items"] + second["items"]]
    assert keys == sorted(keys) and len(set(keys)) == 8
