"""Failed authentications are counted and slowed; key creation and revocation are audited."""

import uuid

from prometheus_client import REGISTRY
from sqlalchemy import text

from app.core.config import Settings
from app.main import create_app
from app.services.access import api_keys


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("consent_api_auth_failures_total", {"reason": reason}) or 0.0


async def test_repeated_failures_from_one_client_get_429_and_are_counted(
    engine, conn, test_settings, make_key
):
    import httpx

    settings = Settings(**{**test_settings.model_dump(), "auth_failures_allowed": 5})
    app = create_app(settings, engine=engine, session_bind=conn)
    good = await make_key("auditor")
    before_unknown, before_missing = (
        _failures("unknown_or_revoked"),
        _failures("missing_or_malformed"),
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for i in range(3):
            r = await client.get("/v1/purposes", headers={"Authorization": f"Bearer cak_bad{i}"})
            assert r.status_code == 401
        for _ in range(2):
            assert (await client.get("/v1/purposes")).status_code == 401
        # Past the limit a failing request is refused (no key, or a wrong one)...
        for headers in ({"Authorization": "Bearer cak_bad9"}, {}):
            r = await client.get("/v1/purposes", headers=headers)
            assert r.status_code == 429
            assert r.headers["content-type"] == "application/problem+json"
            assert int(r.headers["retry-after"]) >= 1
        # ...but a valid key from the same address is served (a CRM behind the website's
        # egress is not locked out by the website's broken integration).
        r = await client.get("/v1/purposes", headers=good)
        assert r.status_code == 200 and r.json()["items"]
    assert _failures("unknown_or_revoked") - before_unknown == 4
    assert _failures("missing_or_malformed") - before_missing == 3
    other = httpx.ASGITransport(app=app, client=("198.51.100.9", 4000))
    async with httpx.AsyncClient(transport=other, base_url="http://t") as client:
        assert (await client.get("/v1/purposes", headers=good)).status_code == 200
        metrics = await client.get("/metrics", headers=good)
    assert "consent_api_auth_failures_total" in metrics.text


async def test_key_creation_and_revocation_are_audited(db):
    name = f"audited-{uuid.uuid4().hex[:6]}"
    await api_keys.create_key(db, name=name, role="sync")
    assert await api_keys.revoke_key(db, name=name)
    key_id = (
        await db.execute(text("SELECT id FROM api_keys WHERE name = :n"), {"n": name})
    ).scalar()
    actions = (
        (
            await db.execute(
                text("SELECT action FROM audit_entries WHERE entity_id = :i ORDER BY id"),
                {"i": str(key_id)},
            )
        )
        .scalars()
        .all()
    )
    assert actions == ["api_key.create", "api_key.revoke"]


async def test_the_website_cannot_sweep_emails_through_a_batch(client, make_key, db):
    website = await make_key("website")
    before = (await db.execute(text("SELECT count(*) FROM decisions"))).scalar_one()
    emails = [f"probe-{i}@example.com" for i in range(50)]
    r = await client.post(
        "/v1/decisions/batch",
        json={"purpose": "email_campaigns", "subjects": emails},
        headers=website,
    )
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert "subject_unknown" not in r.text
    assert (await db.execute(text("SELECT count(*) FROM decisions"))).scalar_one() == before
    ids = [str(uuid.uuid4()) for _ in range(3)]
    r = await client.post(
        "/v1/decisions/batch", json={"purpose": "email_campaigns", "subjects": ids}, headers=website
    )
    assert r.status_code == 200 and len(r.json()["items"]) == 3
