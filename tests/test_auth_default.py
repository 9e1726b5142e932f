"""Issue 8, item 7(c): authentication is the router default. A route cannot ship without it,
`require(scope)` only adds the scope, and a request costs one key lookup."""

from typing import Any

import httpx
from fastapi import APIRouter

from app.core.auth import authenticate
from app.main import create_app, include_api_router
from tests.driver_log import statements_sent
from tests.routes import all_routes

# The only paths served without an API key (API.md, "Operations").
PUBLIC_PATHS = {"/healthz", "/readyz", "/openapi.json", "/docs", "/redoc"}
# The person's signed-link pages: the token in the path is the credential (API.md).
PUBLIC_PATHS |= {
    "/u/{token}",
    "/p/{token}",
    "/p/assets/{name}",
    "/p/{token}/withdraw",
    "/p/{token}/give",
    "/p/{token}/transfer",
    "/p/{token}/opt-out",
    "/p/{token}/request",
    "/c/{token}",  # the confirmation link e-mailed to the person (double opt-in, a request)
}
# The auditor's pages accept a bearer key or a page session (a browser cannot send a header
# from the address bar); they check the key or the session themselves, then the scope.
PUBLIC_PATHS |= {
    "/v1/reports/overview",
    "/v1/reports/processing-activities",
    "/auditor/link/{token}",
    "/auditor/login",
    "/auditor/logout",
}
# MailChimp cannot send a header: its webhook carries a `secret` query parameter (API.md).
PUBLIC_PATHS |= {"/v1/webhooks/mailchimp"}
# The public signing keys (JWKS): whoever holds a receipt verifies it with them (API.md).
PUBLIC_PATHS |= {"/v1/keys", "/.well-known/jwks.json"}
# Static files served by the app itself (docs assets, the pages' stylesheets): nothing personal.
PUBLIC_PATHS |= {"/static/docs", "/static/auditor", "/static/console"}
# The privacy team's console checks a bearer key or its own session cookie itself, then the
# scope its API twin needs (app.web.console); every one of its routes is under /console/.
CONSOLE = "/console"


def _default_dependencies(route: Any) -> list[Any]:
    return [d.dependency for d in getattr(route, "dependencies", None) or []]


def test_every_route_but_the_public_ones_authenticates_by_default(app):
    routes = all_routes(app)
    assert len(routes) > 40  # the whole app was walked, included routers too
    missing = [
        f"{sorted(r.methods or [])} {r.path}"
        for r in routes
        if r.path not in PUBLIC_PATHS
        and not r.path.startswith(CONSOLE)
        and authenticate not in _default_dependencies(r)
    ]
    assert missing == []
    public = {r.path for r in routes if authenticate not in _default_dependencies(r)}
    # The allow-list names nothing that is not public; the console's routes are all its own.
    assert {p for p in public if not p.startswith(CONSOLE)} == PUBLIC_PATHS
    assert any(p.startswith(CONSOLE) for p in public)


async def test_a_route_written_without_require_still_needs_a_key(engine, conn, test_settings, crm):
    app = create_app(test_settings, engine=engine, session_bind=conn)
    careless = APIRouter()

    @careless.get("/v1/forgot-its-scope")
    async def forgot() -> dict[str, str]:
        return {"ok": "yes"}

    include_api_router(app, careless)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        anonymous = await c.get("/v1/forgot-its-scope")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")
        assert (await c.get("/v1/forgot-its-scope", headers=crm)).json() == {"ok": "yes"}


async def test_one_key_lookup_per_request(client, db, crm, auditor):
    # Requests run on the test's connection (tests/conftest.py): count what the driver sends.
    async with statements_sent(db) as sent:
        assert (await client.get("/v1/purposes", headers=crm)).status_code == 200
    # The default and require(scope) share one principal.
    assert len([s for s in sent if "api_keys" in s]) == 1
    async with statements_sent(db) as sent:
        # The scope check still bites after the shared authentication.
        forbidden = await client.post("/v1/subjects", json={}, headers=auditor)
    assert forbidden.status_code == 403 and "subjects:write" in forbidden.json()["detail"]
    assert len([s for s in sent if "api_keys" in s]) == 1


async def test_public_paths_answer_without_a_key(client):
    for path in (
        "/healthz",
        "/readyz",
        "/docs",
        "/openapi.json",
        "/v1/keys",
        "/.well-known/jwks.json",
    ):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get("/metrics")).status_code == 401
