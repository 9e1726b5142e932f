"""401 for missing or bad keys, 403 for the wrong role, on every protected route."""

import pytest
from sqlalchemy import text

from app.core.auth import ROLE_SCOPES
from tests.conftest import new_subject

SID = "00000000-0000-0000-0000-000000000001"
# (method, path, body, scope)
ROUTES = [
    ("GET", "/v1/subjects", None, "subjects:read"),
    ("POST", "/v1/subjects", new_subject(), "subjects:write"),
    ("GET", f"/v1/subjects/{SID}", None, "subjects:read"),
    ("PATCH", f"/v1/subjects/{SID}", {"name": "x"}, "subjects:write"),
    ("GET", "/v1/purposes", None, "catalogue:read"),
    (
        "PUT",
        "/v1/purposes/newsletters",
        {"description": "d", "allowed_bases": ["consent"], "direct_marketing": True},
        "catalogue:write",
    ),
    ("GET", "/v1/recipients", None, "catalogue:read"),
    (
        "PUT",
        "/v1/recipients/acme",
        {"name": "Acme", "role": "processor", "country": "FR", "inside_eea_uk": True},
        "catalogue:write",
    ),
    ("GET", "/v1/policies", None, "catalogue:read"),
    ("POST", "/v1/policies", {"version": "v-auth", "text_sha256": "0" * 64}, "catalogue:write"),
    ("GET", "/v1/categories", None, "catalogue:read"),
    ("GET", "/v1/sources", None, "catalogue:read"),
    ("GET", "/metrics", None, "metrics:read"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
async def test_missing_and_bad_keys_are_401(client, method, path, body, scope):
    for headers in ({}, {"Authorization": "Bearer cak_nope"}, {"Authorization": "Basic abc"}):
        r = await client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (method, path, headers)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("role", sorted(ROLE_SCOPES))
async def test_role_matrix(client, make_key, role):
    headers = await make_key(role)
    for method, path, body, scope in ROUTES:
        r = await client.request(method, path, json=body, headers=headers)
        if scope in ROLE_SCOPES[role]:
            assert r.status_code not in (401, 403), (role, method, path, r.text)
        else:
            assert r.status_code == 403, (role, method, path, r.status_code)
            assert r.json()["type"] == "urn:consent-api:problem:forbidden"


async def test_auditor_cannot_write_anything(client, make_key):
    headers = await make_key("auditor")
    writes = [r for r in ROUTES if r[0] != "GET"]
    assert writes
    for method, path, body, _ in writes:
        r = await client.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, (method, path)


async def test_revoked_key_is_401(client, crm, db):
    assert (await client.get("/v1/purposes", headers=crm)).status_code == 200
    key_hash = __import__("app.core.auth", fromlist=["hash_key"]).hash_key(
        crm["Authorization"].split()[1]
    )
    await db.execute(
        text("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h"), {"h": key_hash}
    )
    await db.commit()
    assert (await client.get("/v1/purposes", headers=crm)).status_code == 401


async def test_keys_are_stored_only_as_hashes(db, make_key):
    headers = await make_key("crm")
    key = headers["Authorization"].split()[1]
    rows = (await db.execute(text("SELECT name, role, key_hash FROM api_keys"))).all()
    assert all(key not in str(tuple(r)) for r in rows)
    assert any(len(r.key_hash) == 64 for r in rows)


async def test_public_paths_need_no_key(client):
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path
