"""app.core.direct refuses, at start-up, a direct route that nothing authenticates, runs the
dependencies of the route as included (not only the route's own), and leaves a request to
FastAPI when `app.dependency_overrides` names one of the route's dependencies."""

import typing
import uuid
from typing import Annotated, Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core import direct
from app.core.auth import PRINCIPAL_KEY, ROLE_SCOPES, Principal, authenticate, require
from app.routers import decisions
from tests.conftest import new_subject


async def database(request: Request) -> str:
    """Not an authenticating dependency (like app.core.db's `get_database`)."""
    return "db"


def _tiny_app(*, include_dependencies: list[Any] | None = None) -> tuple[FastAPI, list[Any]]:
    """One router: an endpoint with no checks of its own, one with `require(...)`, one with
    only a non-authenticating dependency."""
    router = APIRouter()

    @router.get("/open")
    async def open_endpoint(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @router.get("/scoped")
    async def scoped_endpoint(
        principal: Annotated[Principal, Depends(require("subjects:read"))],
    ) -> Response:
        return JSONResponse({"name": principal.name})

    @router.get("/db-only")
    async def db_only_endpoint(db: Annotated[str, Depends(database)]) -> Response:
        return JSONResponse({"db": db})

    app = FastAPI()
    app.include_router(router, dependencies=include_dependencies or [])
    return app, [open_endpoint, scoped_endpoint, db_only_endpoint]


def test_a_direct_route_without_authentication_is_refused_at_start_up():
    app, (open_endpoint, scoped_endpoint, db_only_endpoint) = _tiny_app()
    with pytest.raises(TypeError, match="authenticate"):
        direct.install(app, [open_endpoint])
    with pytest.raises(TypeError, match="authenticate"):
        direct.install(app, [db_only_endpoint])  # a dependency, but not one that checks a key
    with pytest.raises(TypeError, match="authenticate"):
        direct.install(app, [scoped_endpoint, open_endpoint])  # one bad route fails them all
    direct.install(app, [scoped_endpoint])  # `require(...)` authenticates


async def test_the_included_routers_authentication_counts_and_runs_on_the_direct_path(
    monkeypatch,
):
    """`include_api_router`'s `Depends(authenticate)` is part of the route as FastAPI serves
    it: the direct path accepts it as the route's authentication, and awaits it (and any
    other include-level dependency), as FastAPI would."""
    ran: list[str] = []

    async def marker(request: Request) -> None:
        ran.append(request.url.path)

    app, (open_endpoint, _, db_only_endpoint) = _tiny_app(
        include_dependencies=[Depends(authenticate), Depends(marker)]
    )
    direct.install(app, [open_endpoint, db_only_endpoint])
    solved: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    principal = Principal(uuid.uuid4(), "someone", "crm", ROLE_SCOPES["crm"])

    def known_caller(inner: ASGIApp) -> ASGIApp:  # as app.core.auth_first leaves the scope
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            scope[PRINCIPAL_KEY] = principal
            await inner(scope, receive, send)

        return wrapped

    transport = httpx.ASGITransport(app=known_caller(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        got = await c.get("/db-only")
    assert got.status_code == 200 and got.json() == {"db": "db"}
    assert ran == ["/db-only"] and solved == []  # served directly, include-level deps run


def _asker() -> Any:
    """The `require("decisions:ask")` dependency of `POST /v1/decisions`."""
    hints = typing.get_type_hints(decisions.create_decision, include_extras=True)
    for meta in typing.get_args(hints["principal"])[1:]:
        if getattr(meta.dependency, "required_scope", None) == "decisions:ask":
            return meta.dependency
    raise AssertionError("create_decision has no require('decisions:ask') parameter")


@pytest.fixture
def solved(monkeypatch) -> list[str]:
    seen: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["request"].url.path)
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return seen


async def test_dependency_overrides_send_the_request_to_fastapi(app, client, crm, solved):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    body = {"subject_id": s["id"], "purpose": "surveys"}
    solved.clear()
    assert (await client.post("/v1/decisions", json=body, headers=crm)).status_code == 200
    assert solved == []  # served directly

    def refuse() -> Principal:
        raise HTTPException(status_code=418, detail="overridden")

    app.dependency_overrides[_asker()] = refuse
    try:
        got = await client.post("/v1/decisions", json=body, headers=crm)
        assert got.status_code == 418, got.text  # the override ran: FastAPI served it
        assert solved == ["/v1/decisions"]
        # An override of something no direct route depends on changes nothing here.
        app.dependency_overrides.pop(_asker())
        app.dependency_overrides[database] = refuse
        solved.clear()
        assert (await client.post("/v1/decisions", json=body, headers=crm)).status_code == 200
        assert solved == []
    finally:
        app.dependency_overrides.clear()
    assert (await client.post("/v1/decisions", json=body, headers=crm)).status_code == 200
    assert solved == []
