"""A query parameter the matched route does not declare is a 422 problem naming it (API.md:
"a misspelt filter never widens a list"; `?subjectid=` must not list everyone's requests).

FastAPI ignores query keys a route does not declare. This wrapper sits in front of the
router and of app.core.direct's dispatcher, behind app.core.auth_first (a caller is told
who they are before what they sent wrong), and refuses such a request before a byte of its
body is read, so a write with a misspelt parameter changes nothing.

What each route accepts is read once, at start-up, from FastAPI's dependant of the route as
included (its own parameters and those of every dependency, a parameter model's fields
included), so the check can never drift from the OpenAPI document. A request without a
query string (every hot path) costs one truthiness test; one with a query string finds its
route by method and first two path segments (a dict look-up), then a regular expression
over the few routes sharing them, as the router would (the first route in the app's order
wins).

Routes whose callers add parameters of their own are exempt, by endpoint: the MailChimp
webhook (MailChimp appends what it likes) and the person's signed-link pages (e-mail
clients and link trackers append theirs; the pages read their own, such as `done`).
Mounts (static files) and paths no route matches are left to the router (404, 405).
"""

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_plus

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import MAX_REPORTED_ERRORS, PROBLEM_MEDIA_TYPE, ProblemError

# A parameter name is echoed only when it looks like one: a key may be anything a client
# typed, an e-mail address included (no personal data in errors).
SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")
Bucket = tuple[str, str | None, str | None]  # method, first two segments (None: a parameter)


class UnknownQueryParameter(ProblemError):
    """The shape of FastAPI's own validation problems (app.core.errors), one error per key."""

    status, slug, title = 422, "validation-error", "Request validation failed"


class RouteQuery:
    """One route's pattern, its place in the app's order, and the query keys it accepts
    (None: exempt, anything goes)."""

    __slots__ = ("accepted", "index", "pattern", "shown")

    def __init__(self, index: int, pattern: str, accepted: tuple[str, ...] | None) -> None:
        self.index, self.pattern = index, re.compile(pattern)
        self.accepted = None if accepted is None else frozenset(accepted)
        self.shown = ", ".join(accepted) if accepted else ""


def _segments(path: str) -> tuple[str | None, str | None]:
    """The first two segments of a path; of a template, None from its first parameter on."""
    first, second = [*path.split("/", 3), "", ""][1:3]
    if "{" in first:
        return None, None
    return first, (None if "{" in second else second)


def query_keys(query: bytes) -> list[str]:
    """The names in a query string as Starlette reads them (`parse_qsl` of its latin-1
    text: `+` and %-escapes decoded), without decoding the values; blank names skipped."""
    keys = []
    for pair in query.split(b"&"):
        key = pair.split(b"=", 1)[0].decode("latin-1")
        if key:
            keys.append(unquote_plus(key) if "%" in key or "+" in key else key)
    return keys


def _shown(name: str) -> str:
    return f"'{name}'" if SAFE_NAME.fullmatch(name) else "'?'"


def _problem(unknown: list[str], route: RouteQuery) -> UnknownQueryParameter:
    # Bounded, as FastAPI's own problems are (app.core.errors.MAX_REPORTED_ERRORS).
    names = ", ".join(_shown(n) for n in unknown[:MAX_REPORTED_ERRORS])
    if len(unknown) > MAX_REPORTED_ERRORS:
        names += f" and {len(unknown) - MAX_REPORTED_ERRORS} more"
    noun = "parameter" if len(unknown) == 1 else "parameters"
    accepted = f"accepted: {route.shown}" if route.shown else "this endpoint takes none"
    return UnknownQueryParameter(
        f"unknown query {noun} {names}; {accepted}",
        errors=[
            {
                "loc": ["query", n if SAFE_NAME.fullmatch(n) else "?"],
                "msg": "Unknown query parameter",
                "type": "extra_forbidden",
            }
            for n in unknown[:MAX_REPORTED_ERRORS]
        ],
        accepted=sorted(route.accepted or ()),
    )


class RefuseUnknownQuery:
    def __init__(self, app: ASGIApp, routes: Iterable[tuple[str, str, RouteQuery]]) -> None:
        self.app = app
        self.table: dict[Bucket, list[RouteQuery]] = {}
        for method, path_format, entry in routes:
            first, second = _segments(path_format)
            self.table.setdefault((method, first, second), []).append(entry)

    def route_for(self, method: str, path: str) -> RouteQuery | None:
        """The first route (in the app's order) that would serve this request, if any."""
        first, second = _segments(path)
        found: RouteQuery | None = None
        for bucket in ((method, first, second), (method, first, None), (method, None, None)):
            for entry in self.table.get(bucket, ()):  # each bucket is in the app's order
                if found is not None and entry.index > found.index:
                    break
                if entry.pattern.fullmatch(path):
                    found = entry
                    break
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            route = self.route_for(scope["method"], get_route_path(scope))
            if route is not None and route.accepted is not None:
                keys = dict.fromkeys(query_keys(scope["query_string"]))
                unknown = [k for k in keys if k not in route.accepted]
                if unknown:
                    raise _problem(unknown, route)
        await self.app(scope, receive, send)


def _names(field: Any) -> list[str]:
    """The query keys one declared parameter takes (a parameter model: its fields')."""
    annotation = field.field_info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or name for name, f in annotation.model_fields.items()]
    return [field.alias]


def declared_query(route: Any) -> tuple[str, ...]:
    """Every query key a route declares: its own and its dependencies', in order."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:  # a plain Starlette route (FastAPI's /openapi.json): none
        return ()
    names: dict[str, None] = {}
    pending = [dependant]
    while pending:
        current = pending.pop(0)
        for field in current.query_params:
            names.update(dict.fromkeys(_names(field)))
        pending.extend(current.dependencies)
    return tuple(names)


def _routes(app: FastAPI) -> list[Any]:
    """Every HTTP route in matching order, as included (prefixes and dependencies applied)."""
    try:
        from fastapi.routing import iter_route_contexts

        contexts: list[Any] = list(iter_route_contexts(app.routes))
        return [c for c in contexts if isinstance(c.original_route, Route)]
    except ImportError:  # FastAPI before lazy router inclusion: app.routes is flat
        return [r for r in app.routes if isinstance(r, Route)]


UNKNOWN_QUERY_PROBLEM = "Validation failed (an undeclared query parameter included)"


def document(spec: dict[str, Any], app: FastAPI, exempt: Iterable[Callable[..., Any]]) -> None:
    """Each checked operation may answer 422 (a problem), whatever its handler declares."""
    free = set(exempt)
    for route in _routes(app):
        operations = spec.get("paths", {}).get(route.path_format, {})
        for method in () if route.endpoint in free else sorted(route.methods or ()):
            if (op := operations.get(method.lower())) is not None:
                op.setdefault("responses", {}).setdefault(
                    "422",
                    {
                        "description": UNKNOWN_QUERY_PROBLEM,
                        "content": {
                            PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                        },
                    },
                )


def install(app: FastAPI, exempt: Iterable[Callable[..., Any]] = ()) -> None:
    """Wrap the router (and app.core.direct's dispatcher): call once every route is added;
    `exempt` endpoints take any query parameter."""
    free = set(exempt)
    table: list[tuple[str, str, RouteQuery]] = []
    for index, route in enumerate(_routes(app)):
        accepted = None if route.endpoint in free else declared_query(route)
        entry = RouteQuery(index, route.path_regex.pattern, accepted)
        methods = sorted(route.methods or ())
        table.extend((method, route.path_format, entry) for method in methods)
    app.router.middleware_stack = RefuseUnknownQuery(app.router.middleware_stack, table)


def exempt_endpoints(*routers: Any) -> list[Callable[..., Any]]:
    """The endpoints of these routers (APIRouter objects)."""
    return [r.endpoint for router in routers for r in router.routes if isinstance(r, APIRoute)]
