"""The directly served hot routes (app.core.direct) answer exactly as FastAPI does, and
really skip FastAPI's dependency solving when the request is an ordinary one."""

import json
import uuid
from typing import Any

import fastapi.routing
import httpx
import pytest

from app.core.direct import direct_route
from app.main import create_app
from tests.conftest import new_subject

UNKNOWN = str(uuid.uuid4())


@pytest.fixture
async def through_fastapi(engine, conn, test_settings):
    """The same app and database with every route served by FastAPI."""
    settings = test_settings.model_copy(update={"direct_routes": False})
    app = create_app(settings, engine=engine, session_bind=conn)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def solved(monkeypatch) -> list[str]:
    """The paths FastAPI solved dependencies for."""
    seen: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["request"].url.path)
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return seen


# What differs between two writes: ids, times, signatures, the fresh subject's own fields.
VOLATILE = {
    "id",
    "decided_at",
    "occurred_at",
    "recorded_at",
    "receipt",
    "jws",
    "instance",
    "email",
    "name",
    "created_at",
    "updated_at",
}


def _stable(value: Any, subject_id: str) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v, subject_id) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v, subject_id) for v in value]
    if isinstance(value, str):
        return value.replace(subject_id, "SUBJECT").replace(subject_id.upper(), "SUBJECT")
    return value


def _comparable(r: httpx.Response, subject_id: str) -> tuple[int, str | None, Any]:
    json_body = r.headers.get("content-type", "").endswith("json")
    body = _stable(r.json(), subject_id) if json_body else _stable(r.text, subject_id)
    return r.status_code, r.headers.get("content-type"), body


async def test_ordinary_requests_skip_dependency_solving(client, crm, solved):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    solved.clear()
    got = await client.get(f"/v1/subjects/{s['id']}", headers=crm)
    assert got.status_code == 200 and got.json()["email"] == s["email"]
    decided = await client.post(
        "/v1/decisions", json={"subject_id": s["id"], "purpose": "surveys"}, headers=crm
    )
    assert decided.status_code == 200 and decided.json()["subject_id"] == s["id"]
    batch = await client.post(
        "/v1/decisions/batch", json={"subjects": [s["id"]], "purpose": "surveys"}, headers=crm
    )
    assert batch.status_code == 200 and len(batch.json()["items"]) == 1
    event = {
        "subject_id": s["id"],
        "purpose": "content_subscriptions",
        "action": "withdrawn",
    }
    assert (await client.post("/v1/consent-events", json=event, headers=crm)).status_code == 201
    assert solved == []
    # A query parameter none of them declares is refused before either path
    # (app.core.query_params); anything unusual is FastAPI's: a body the model refuses.
    refused = await client.get(f"/v1/subjects/{s['id']}?x=1", headers=crm)
    assert refused.status_code == 422 and solved == []
    await client.post("/v1/decisions", json={"purpose": "surveys"}, headers=crm)
    assert solved == ["/v1/decisions"]


def _cases(subject_id: str, crm: dict, website: dict) -> list[tuple[str, str, dict, Any]]:
    """(method, path, headers, body): every direct route, ordinary and not. `subject_id` is
    a placeholder, each case runs on fresh subjects of its own."""
    json_h = {**crm, "Content-Type": "application/json"}
    decision = {"subject_id": subject_id, "purpose": "email_campaigns"}
    return [
        ("GET", f"/v1/subjects/{subject_id}", crm, None),
        ("GET", f"/v1/subjects/{UNKNOWN}", crm, None),
        ("GET", f"/v1/subjects/{subject_id.upper()}", crm, None),
        ("GET", f"/v1/subjects/{subject_id.replace('-', '')}", crm, None),
        ("GET", "/v1/subjects/not-a-uuid", crm, None),
        ("GET", f"/v1/subjects/{subject_id}", website, None),
        ("GET", f"/v1/subjects/{subject_id}", {"Authorization": "Bearer cak_unknown"}, None),
        ("POST", "/v1/decisions", crm, decision),
        ("POST", "/v1/decisions", crm, {**decision, "recipient": "mailchimp"}),
        ("POST", "/v1/decisions", crm, {**decision, "purpose": "no_such_purpose"}),
        ("POST", "/v1/decisions", crm, {"subject_id": UNKNOWN, "purpose": "surveys"}),
        ("POST", "/v1/decisions", crm, {"email": "Nobody@Example.com", "purpose": "surveys"}),
        ("POST", "/v1/decisions", crm, {"purpose": "surveys"}),
        ("POST", "/v1/decisions", crm, {**decision, "extra": 1}),
        ("POST", "/v1/decisions", json_h, b'{"subject_id": '),
        ("POST", "/v1/decisions", json_h, b"[]"),
        ("POST", "/v1/decisions", json_h, b'{"purpose": NaN}'),
        ("POST", "/v1/decisions", {**crm, "Content-Type": "text/plain"}, b"{}"),
        ("POST", "/v1/decisions", website, decision),
        ("POST", "/v1/decisions", {"Authorization": "Bearer cak_unknown"}, decision),
        ("POST", "/v1/decisions/batch", crm, {"subjects": [subject_id], "purpose": "surveys"}),
        ("POST", "/v1/decisions/batch", website, {"subjects": ["a@b.co"], "purpose": "surveys"}),
        ("POST", "/v1/decisions/batch", crm, {"subjects": [], "purpose": "surveys"}),
        (
            "POST",
            "/v1/consent-events",
            crm,
            {"subject_id": subject_id, "purpose": "surveys", "action": "given"},
        ),
        (
            "POST",
            "/v1/consent-events",
            {**crm, "Sec-GPC": "1"},
            {"subject_id": subject_id, "purpose": "surveys", "action": "withdrawn"},
        ),
        (
            "POST",
            "/v1/consent-events",
            {**crm, "Idempotency-Key": ""},
            {"subject_id": subject_id, "purpose": "surveys", "action": "withdrawn"},
        ),
    ]


async def _fresh_subject(client: httpx.AsyncClient, crm: dict) -> str:
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await client.put(
        f"/v1/subjects/{s['id']}/bases/email_campaigns",
        json={"basis": "legitimate_interests", "lia_ref": "LIA-1"},
        headers=crm,
    )
    return str(s["id"])


def _request(case: tuple[str, str, dict, Any], placeholder: str, subject_id: str) -> Any:
    method, path, headers, body = case
    kw: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        kw["content"] = body.replace(placeholder.encode(), subject_id.encode())
    elif body is not None:
        kw["content"] = json.dumps(body).replace(placeholder, subject_id).encode()
        kw["headers"] = {**headers, "Content-Type": "application/json"}
    return (
        method,
        path.replace(placeholder, subject_id).replace(placeholder.upper(), subject_id.upper()),
        kw,
    )


async def test_every_answer_is_the_one_fastapi_gives(client, through_fastapi, crm, make_key):
    """Each case on a fresh subject per app (writes change what the next answer says)."""
    website = await make_key("website")
    placeholder = "00000000-0000-4000-8000-00000000abcd"
    for case in _cases(placeholder, crm, website):
        answers = []
        for app_client in (client, through_fastapi):
            subject_id = await _fresh_subject(client, crm)
            method, path, kw = _request(case, placeholder, subject_id)
            r = await app_client.request(method, path, **kw)
            answers.append(_comparable(r, subject_id))
            assert r.headers.get("x-content-type-options") == "nosniff", case
        assert answers[0] == answers[1], case


def test_an_endpoint_needing_more_than_it_resolves_is_refused_at_start_up():
    from fastapi import APIRouter, Query

    router = APIRouter()

    @router.get("/x")
    async def needs_a_query(q: str = Query()) -> dict:  # not a Response, a query parameter
        return {}

    with pytest.raises(TypeError):
        direct_route(router.routes[0])  # type: ignore[arg-type]
