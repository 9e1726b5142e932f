"""Which methods a path allows, decided from every route at once (security review finding 7).

The router stops at the first route whose pattern matches: its 405 names that one route's
methods (`/v1/purposes/{key}` has GET and PUT; a DELETE was told `Allow: PUT` or `GET`), and
a parameterised route declared earlier catches a literal path (`PATCH /v1/subjects/import`
was served by `PATCH /v1/subjects/{subject_id}`: a 422 or 403 instead of a 405). This
middleware, built once from the app's routes when the app is built, sits in front of the
router (inside the app's exception handling, so a 405 is the usual problem document):

- a path that is exactly a route without path parameters (a literal path) is never served by
  a parameterised route: with a method none of its routes has, it is a 405 whose `Allow`
  lists the literal path's methods. The cost on every request is one dict lookup on the path;
- any other 405 (raised by the router) has its `Allow` replaced with every method of every
  route whose pattern matches the path; only a 405 pays for that walk;
- a parameterised route (or mount) declared before a literal route, matching its path with one
  of its methods, would serve the literal path's own requests: refused at start-up.
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class RouteMethods:
    path: str  # the path template, prefix included
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method (a mount, or a route without methods)
    literal: bool  # no path parameters


def allow_header(methods: Iterable[str]) -> str:
    return ", ".join(sorted(methods))


def _route_contexts(app: FastAPI) -> Iterator[Any]:
    """Every route in matching order, with its effective path (routers' prefixes applied)."""
    try:
        from fastapi.routing import iter_route_contexts

        yield from iter_route_contexts(app.routes)
    except ImportError:  # FastAPI before lazy router inclusion: app.routes is flat
        yield from app.routes


def app_routes(app: FastAPI) -> list[RouteMethods]:
    """The app's HTTP routes and mounts, in the order the router tries them."""
    out = []
    for context in _route_contexts(app):
        route = getattr(context, "original_route", context)
        if not isinstance(route, Route | Mount):  # websockets, anything unknown
            continue
        regex = getattr(context, "path_regex", None)
        path = getattr(context, "path_format", None) or getattr(context, "path", None)
        if regex is None or path is None:
            continue
        methods = getattr(context, "methods", None) if isinstance(route, Route) else None
        params = getattr(context, "param_convertors", None)
        out.append(
            RouteMethods(
                path=path,
                regex=regex,
                methods=frozenset(methods) if methods else None,
                literal=isinstance(route, Route) and not params,
            )
        )
    return out


def check_no_shadowing(routes: list[RouteMethods]) -> None:
    """A literal path's own methods must reach its own routes: refuse an earlier pattern
    route (or mount) that would serve them."""
    for i, literal in enumerate(routes):
        if not literal.literal:
            continue
        for earlier in routes[:i]:
            if earlier.literal or not earlier.regex.match(literal.path):
                continue
            if (
                earlier.methods is None
                or literal.methods is None
                or earlier.methods & literal.methods
            ):
                raise RuntimeError(
                    f"Route {earlier.path} is declared before {literal.path} and would serve "
                    f"its requests: declare {literal.path} first"
                )


class AllowedMethods:
    """Pure ASGI, wrapped around the router (see the module's docstring)."""

    def __init__(self, app: ASGIApp, routes: list[RouteMethods]) -> None:
        self.app = app
        self.routes = routes
        # Literal path -> its `Allow`; a literal path with a route taking any method is left
        # to the router.
        literal: dict[str, set[str] | None] = {}
        for r in routes:
            if r.literal:
                known = literal.setdefault(r.path, set())
                if known is None or r.methods is None:
                    literal[r.path] = None
                else:
                    known.update(r.methods)
        self.literal: dict[str, tuple[frozenset[str], str]] = {
            path: (frozenset(methods), allow_header(methods))
            for path, methods in literal.items()
            if methods is not None
        }

    def allowed(self, path: str) -> frozenset[str]:
        """Every method of every route whose pattern matches `path` (a literal path: its
        own routes' only)."""
        if path in self.literal:
            return self.literal[path][0]
        found: set[str] = set()
        for r in self.routes:
            if r.methods is not None and r.regex.match(path):
                found.update(r.methods)
        return frozenset(found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = get_route_path(scope)
        literal = self.literal.get(path)
        if literal is not None and scope["method"] not in literal[0]:
            raise HTTPException(status_code=405, headers={"Allow": literal[1]})
        try:
            await self.app(scope, receive, send)
        except HTTPException as exc:
            if exc.status_code == 405 and literal is None:
                methods = self.allowed(path)
                if methods:
                    exc.headers = {**(exc.headers or {}), "Allow": allow_header(methods)}
            raise


def install(app: FastAPI) -> None:
    """In front of the router and of every other wrapper of it (app.core.direct's
    dispatcher, app.core.auth_first's key check, which would otherwise apply a parameterised
    route's scope to a literal path): call last, once every route is added."""
    routes = app_routes(app)
    check_no_shadowing(routes)
    app.router.middleware_stack = AllowedMethods(app.router.middleware_stack, routes)
