"""Authenticate, and check the route's scopes, before a single byte of the body is read.

FastAPI reads and parses a body before it solves a route's dependencies, so a caller with a
well-formed but wrong key could make a worker read and parse a large body before being told
401. This wrapper sits in front of the router (inside the app's exception handling, so its
401, 403 and 429 are the usual problem documents) and, for every keyed path, looks the key up
(`authenticate`, which the route's own dependencies then reuse) and checks each scope the
matched route's `require(...)` parameters ask for. The route's own checks still run after:
this only makes them happen first.

The scopes of each route are read once, at start-up, from the routes' dependencies; a
request finds its route's scopes by method and first path segments (a dict look-up), then
a regular expression over the few routes sharing them.
"""

import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.auth import authenticate, check_scope
from app.core.guard import is_public

RouteScopes = tuple[re.Pattern[str], tuple[str, ...]]


def _prefix(path: str) -> str:
    """The first two segments of a path, or of a path template up to its first parameter."""
    return "/".join(path.split("{", 1)[0].split("/")[:3])


class AuthenticateFirst:
    def __init__(self, app: ASGIApp, routes: Iterable[tuple[str, str, str, tuple[str, ...]]]):
        self.app = app
        self.table: dict[tuple[str, str], list[RouteScopes]] = {}
        for method, path_format, pattern, scopes in routes:
            entry = (re.compile(pattern), scopes)
            self.table.setdefault((method, _prefix(path_format)), []).append(entry)

    def scopes_for(self, method: str, path: str) -> tuple[str, ...]:
        for pattern, scopes in self.table.get((method, _prefix(path)), ()):
            if pattern.fullmatch(path):
                return scopes
        return ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_public(scope["path"]):
            principal = await authenticate(Request(scope, receive))
            for needed in self.scopes_for(scope["method"], scope["path"]):
                check_scope(principal, needed)
        await self.app(scope, receive, send)


def api_routes(app: FastAPI) -> list[Any]:
    """Every API route of the app, whether FastAPI included its routers eagerly or lazily."""
    try:
        from fastapi.routing import iter_route_contexts

        return [
            c for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)
        ]
    except ImportError:  # FastAPI before lazy router inclusion: app.routes is flat
        return [r for r in app.routes if isinstance(r, APIRoute)]


def required_scopes(route: Any) -> tuple[str, ...]:
    """The scopes a route's `require(...)` dependencies check (app.core.auth.require)."""
    found = []
    for dependant in route.dependant.dependencies:
        scope = getattr(dependant.call, "required_scope", None)
        if scope is not None:
            found.append(scope)
    return tuple(found)


def install(app: FastAPI) -> None:
    """Wrap the router: call after every router is included (and after direct routes, so
    that they are wrapped too)."""
    table = [
        (method, route.path_format, route.path_regex.pattern, required_scopes(route))
        for route in api_routes(app)
        for method in sorted(route.methods or ())
    ]
    app.router.middleware_stack = AuthenticateFirst(app.router.middleware_stack, table)
