"""Contract points a schema fuzzer found (security review finding 7): a 405's `Allow` names
every method of the path, a literal path is never served by a parameterised route, a PUT
that creates documents its 201, and a policy's `published_at` is never a number."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from app.core import methods
from app.core.errors import install_error_handlers
from tests.conftest import new_subject

PROBLEM = "application/problem+json"
NDJSON = {"Content-Type": "application/x-ndjson"}


def allow(r: httpx.Response) -> set[str]:
    return {m.strip() for m in r.headers["allow"].split(",")}


def assert_405(r: httpx.Response, allowed: set[str]) -> None:
    assert r.status_code == 405, r.text
    assert r.headers["content-type"] == PROBLEM
    assert allow(r) == allowed
    assert r.headers["allow"] == ", ".join(sorted(allowed))  # one header, stable order
    body = r.json()
    assert body["type"] == "urn:consent-api:problem:method-not-allowed"
    assert body["status"] == 405 and body["title"] == "Method not allowed"


async def _count(db: Any, table: str) -> int:
    return int((await db.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_a_405_lists_every_method_of_every_route_of_the_path(client, admin, db):
    categories = (
        await db.execute(text("SELECT key, retention_rule, retention_months FROM categories"))
    ).all()
    cases = [
        # Parameterised paths: several routes share the pattern, each with its own methods.
        ("DELETE", "/v1/retention-rules/customer_contact", {"GET", "PUT"}),
        ("POST", "/v1/retention-rules/customer_contact", {"GET", "PUT"}),
        ("DELETE", f"/v1/subjects/{uuid.uuid4()}", {"GET", "PATCH"}),
        ("POST", f"/v1/subjects/{uuid.uuid4()}/bases/surveys", {"PUT", "DELETE"}),
        ("DELETE", "/v1/purposes/surveys", {"PUT"}),
        # Literal paths.
        ("DELETE", "/v1/purposes", {"GET"}),
        ("PUT", "/v1/consent-events", {"GET", "POST"}),
        ("DELETE", "/v1/policies", {"GET", "POST"}),
        ("PUT", "/v1/decisions", {"GET", "POST"}),
    ]
    for method, path, allowed in cases:
        assert_405(await client.request(method, path, json={}, headers=admin), allowed)
    after = (
        await db.execute(text("SELECT key, retention_rule, retention_months FROM categories"))
    ).all()
    assert sorted(after) == sorted(categories)


@pytest.mark.parametrize("role", ["crm", "admin", "auditor", "website", "sync"])
async def test_patch_on_the_import_path_is_405_and_writes_nothing(client, make_key, db, role):
    """With any role's key (app.core.guard refuses a request without one first)."""
    headers = await make_key(role)
    tables = ("subjects", "import_batches", "audit_entries", "lawful_bases")
    before = {t: await _count(db, t) for t in tables}
    row = new_subject()
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("PATCH", {"json": {"name": "Someone Else"}}),
        ("PATCH", {"content": json.dumps(row).encode() + b"\n", "headers": NDJSON}),
        ("GET", {}),
        ("DELETE", {}),
        ("PUT", {"json": row}),
    ]
    for method, kwargs in attempts:
        extra = kwargs.pop("headers", {})
        r = await client.request(
            method, "/v1/subjects/import", headers={**headers, **extra}, **kwargs
        )
        assert_405(r, {"POST"})
    assert {t: await _count(db, t) for t in tables} == before
    found = await client.get(
        "/v1/subjects", params={"email": row["email"]}, headers=await make_key("crm")
    )
    assert found.status_code == 200 and found.json()["items"] == []


async def test_the_literal_path_still_serves_its_own_method(client, crm, db):
    before = await _count(db, "subjects")
    row = new_subject()
    r = await client.post(
        "/v1/subjects/import", content=json.dumps(row).encode() + b"\n", headers={**crm, **NDJSON}
    )
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 1
    assert await _count(db, "subjects") == before + 1
    # The parameterised route keeps its own paths.
    sid = (await client.get("/v1/subjects", params={"email": row["email"]}, headers=crm)).json()[
        "items"
    ][0]["id"]
    patched = await client.patch(f"/v1/subjects/{sid}", json={"name": "Ada King"}, headers=crm)
    assert patched.status_code == 200, patched.text
    got = await client.get(f"/v1/subjects/{sid}", headers=crm)
    assert got.status_code == 200 and got.json()["name"] == "Ada King"


async def test_the_hot_paths_never_walk_the_routes(client, crm, app, monkeypatch):
    """Served requests cost one dict lookup on the path: only a 405 walks the routes."""
    assert isinstance(app.router.middleware_stack, methods.AllowedMethods)

    def walked(self: Any, path: str) -> frozenset[str]:
        raise AssertionError(f"walked the routes for {path}")

    monkeypatch.setattr(methods.AllowedMethods, "allowed", walked)
    created = await client.post("/v1/subjects", json=new_subject(), headers=crm)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    got = await client.get(f"/v1/subjects/{sid}", headers=crm)
    assert got.status_code == 200 and got.json()["id"] == sid
    decided = await client.post(
        "/v1/decisions", json={"subject_id": sid, "purpose": "surveys"}, headers=crm
    )
    assert decided.status_code == 200, decided.text
    event = await client.post(
        "/v1/consent-events",
        json={
            "subject_id": sid,
            "purpose": "content_subscriptions",
            "action": "withdrawn",
            "method": "email",
        },
        headers=crm,
    )
    assert event.status_code == 201, event.text


def _tiny_app(*routers: APIRouter) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    return app


async def test_the_rule_holds_for_any_app_and_refuses_a_shadowed_literal_path():
    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"got": item_id}

    @items.patch("/{item_id}")
    async def patch_item(item_id: str) -> dict[str, str]:
        return {"patched": item_id}

    @items.post("/new")
    async def new_item() -> dict[str, str]:
        return {"created": "new"}

    app = _tiny_app(items)
    methods.install(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.post("/items/new")).json() == {"created": "new"}
        assert (await c.get("/items/7")).json() == {"got": "7"}
        for method in ("GET", "PATCH", "DELETE"):
            assert_405(await c.request(method, "/items/new"), {"POST"})
        assert_405(await c.delete("/items/7"), {"GET", "PATCH"})
        assert (await c.get("/nowhere")).status_code == 404

    # A parameterised route declared first with the literal path's own method would serve
    # it: refused when the app is built, naming both.
    shadowing = APIRouter(prefix="/things")

    @shadowing.get("/{thing_id}")
    async def get_thing(thing_id: str) -> dict[str, str]:
        return {"got": thing_id}

    @shadowing.get("/latest")
    async def latest_thing() -> dict[str, str]:
        return {"latest": "yes"}

    with pytest.raises(RuntimeError, match=r"/things/\{thing_id\}.*/things/latest"):
        methods.install(_tiny_app(shadowing))


@pytest.mark.parametrize(
    ("path", "body", "table", "field"),
    [
        (
            "/v1/purposes/{key}",
            {"description": "Webinars", "allowed_bases": ["consent"], "direct_marketing": True},
            "purposes",
            "description",
        ),
        (
            "/v1/recipients/{key}",
            {"name": "Hall Hire Ltd", "role": "processor", "country": "GB", "inside_eea_uk": True},
            "recipients",
            "name",
        ),
    ],
)
async def test_a_put_that_creates_is_201_and_documented(
    client, admin, db, path, body, table, field
):
    key = f"k_{uuid.uuid4().hex[:8]}"
    url = path.replace("{key}", key)
    created = await client.put(url, json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["key"] == key and created.json()[field] == body[field]
    replaced = await client.put(url, json={**body, field: "Replaced"}, headers=admin)
    assert replaced.status_code == 200, replaced.text
    stored = (
        await db.execute(text(f"SELECT {field} FROM {table} WHERE key = :k"), {"k": key})
    ).scalar_one()
    assert stored == "Replaced"

    spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"][path]["put"]["responses"]
    schema = path.split("/")[2][:-1].capitalize() + "Public"
    for code in ("200", "201"):
        assert responses[code]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{schema}"
        }
    assert responses["201"]["description"] == "Created"
    assert responses["422"]["content"][PROBLEM]  # the errors are still problems


@pytest.mark.parametrize("published_at", [0, 1767225600, 1.5, True, "2026-01-01T00:00:00"])
async def test_published_at_must_be_an_rfc3339_string(client, admin, db, published_at):
    version = f"v-{uuid.uuid4().hex[:8]}"
    body = {"version": version, "published_at": published_at, "text_sha256": "ab" * 32}
    r = await client.post("/v1/policies", json=body, headers=admin)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["type"] == "urn:consent-api:problem:validation-error"
    assert [e["loc"] for e in problem["errors"]] == [["body", "published_at"]]
    assert "published_at" in problem["detail"]
    stored = (
        await db.execute(text("SELECT count(*) FROM policies WHERE version = :v"), {"v": version})
    ).scalar_one()
    assert stored == 0


async def test_published_at_as_text_is_stored_and_old_rows_still_list(client, admin, db):
    version = f"v-{uuid.uuid4().hex[:8]}"
    body = {
        "version": version,
        "published_at": "2026-01-01T00:00:00+01:00",
        "text_sha256": "ab" * 32,
    }
    r = await client.post("/v1/policies", json=body, headers=admin)
    assert r.status_code == 201, r.text
    published = datetime.fromisoformat(r.json()["published_at"])
    assert published == datetime(2025, 12, 31, 23, tzinfo=UTC)
    stored = (
        await db.execute(
            text("SELECT published_at = '2025-12-31T23:00:00Z' FROM policies WHERE version = :v"),
            {"v": version},
        )
    ).scalar_one()
    assert stored is True
    # A row stored before the rule (a number read as 1970) still lists: the rule is the input's.
    await db.execute(
        text(
            "INSERT INTO policies (id, version, published_at, text_sha256, created_at,"
            " reconsent_purposes) VALUES (:id, 'legacy-1970', 'epoch', :h, now(), '{}')"
        ),
        {"id": uuid.uuid4(), "h": "cd" * 32},
    )
    await db.commit()
    listed = await client.get("/v1/policies", params={"limit": 500}, headers=admin)
    assert listed.status_code == 200, listed.text
    assert "legacy-1970" in {p["version"] for p in listed.json()["items"]}
