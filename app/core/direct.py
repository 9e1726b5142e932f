"""Direct dispatch of the hottest routes (issue 9).

FastAPI 0.16x finds a route by walking every included router and then solves the route's
dependency graph, per request: about a third of a worker's CPU on `GET /v1/subjects/{id}`
(cProfile, in-process, one request at a time). For the few endpoints named in `app.main`,
this dispatcher sits in front of the router (inside the app's middleware and exception
handling) and calls the same endpoint function with its arguments resolved the way FastAPI
resolves them, derived once from the endpoint's own signature:

- the route's dependencies as included (`include_router(..., dependencies=...)`'s, such as
  `authenticate`, the router default, then the route's own: under FastAPI's lazy router
  inclusion they are the RouteContext's, not the original APIRoute's) and every
  `Depends(fn)` parameter are awaited as `fn(request)`, in FastAPI's order (route's first,
  then the parameters in signature order), so a key check or scope check is the very same
  callable;
  unlike FastAPI, they run before the body is read (app.core.auth_first does so for every
  route), so a wrong key never costs the parsing and validation of a large body;
- a `uuid.UUID` path parameter is taken only in its canonical form;
- the body model is validated from the JSON body exactly as FastAPI does (`json.loads`,
  then a `TypeAdapter` of the model in Python mode with `from_attributes=True`, which for
  an SQLModel class also skips `SQLModel.model_validate`'s own wrapper);
- a `Header(alias=...)` parameter is read from the request's headers.

Anything it does not recognise exactly falls through to FastAPI unchanged, the body replayed:
another shape of path, a query string, a content type other than `application/json`, a body
that is not JSON or that the model refuses, a repeated header. So every error answer is still
FastAPI's own, and the direct path only ever serves requests that FastAPI would have served
the same way. An endpoint whose signature needs anything else is refused at start-up.

Authentication is explicit, not incidental. `direct_route()` refuses (TypeError, so
`create_app` fails at start-up) a route whose dependencies, the route's as included and its
`Depends` parameters', include neither `app.core.auth.authenticate` nor a `require(...)`
dependency (one carrying `required_scope`): the direct path awaits exactly those callables,
so a route without one would serve any caller. app.core.auth_first authenticates every keyed
path before this dispatcher as well; this check is the second line, and states the rule.

`app.dependency_overrides` is honoured by not serving directly: when the dict names any
dependency of the matched route, the request goes to FastAPI untouched (nothing of it read
yet), and FastAPI applies the override. Falling through, rather than calling the override
here, because an override may have any signature FastAPI can solve (`lambda: principal`,
sub-dependencies, `yield` and its teardown) while this path calls only `async def
dep(request)`; re-solving overrides here would be a second copy of FastAPI's solver. The
check runs per request, since overrides are usually set after the app is built (tests); it
is one truthiness test of an empty dict in production.

What it buys (measured 2026-12-04, this tree, direct dispatch on and off side by side in one
run so both sides share the machine's noise: the machine, 2 cores, was running another test
suite meanwhile, so single rounds swing by a third). `python direct_ab.py --rounds 5`, a
throwaway driver (bench has no option to set the environment of one side) built from bench's
own pieces (`bench.seed.seed`, `bench.__main__.start`, `measure`, `cases`): one seeded
embedded PostgreSQL (100,000 subjects), two `consent-api serve` (1 worker, pool 10), the
second with CONSENT_DIRECT_ROUTES=false; per case wrk -t2 -c32, 2 s warm-up then 10 s, the
two sides alternating which goes first; medians of 5 rounds (req/s; CPU ms of the serving
process per request, steadier):

    case                        direct        FastAPI      req/s    CPU ms/request
    POST /v1/decisions          1,098/s         988/s     +11%     0.393 vs 0.460 (-15%)
    POST /v1/consent-events     1,185/s         989/s     +20%     0.430 vs 0.560 (-23%)
    GET /v1/subjects/{id}       4,527/s       2,703/s     +67%     0.175 vs 0.298 (-41%)
    POST /v1/decisions/batch    25,150 dec/s  26,820 dec/s  -6%    8.40 vs 9.16 (-8%)

Decisions gained in 3 rounds of 5 (the +11% is at the edge of the noise), consent events in
4 of 5 and the subject read in all 5; the batch (one request per 1,000 decisions) is the same
within noise. Kept: consent events clear the 10% bar, and every case spends less CPU.
"""

import inspect
import json
import re
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.params import Depends, Header
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.auth import authenticate

UUID_TEXT = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
Resolver = Callable[[Request, dict[str, str]], Awaitable[Any]]
Dependency = Callable[[Request], Awaitable[Any]]
NOT_HERE = object()  # a resolver's answer: let FastAPI serve this request
# A body this large (a batch of a thousand international addresses takes up to a second of
# email-validator) is validated in a worker thread, so the event loop keeps serving others.
OFF_LOOP_BYTES = 64 * 1024


@dataclass(frozen=True)
class DirectRoute:
    method: str
    path: re.Pattern[str]
    route: APIRoute
    arguments: tuple[tuple[str, Resolver, Dependency | None], ...]  # name, how, dependency
    dependencies: tuple[Dependency, ...]
    # Every dependency callable the direct path awaits (the route's and the `Depends`
    # parameters'): the keys an `app.dependency_overrides` entry would use.
    calls: frozenset[Callable[..., Any]]


def _authenticates(fn: Callable[..., Any]) -> bool:
    """`authenticate` itself, or a `require(scope)` dependency (which calls it)."""
    return fn is authenticate or getattr(fn, "required_scope", None) is not None


def _request_only(fn: Callable[..., Any], where: str) -> Dependency:
    params = list(inspect.signature(fn).parameters.values())
    if (
        not inspect.iscoroutinefunction(fn)
        or len(params) != 1
        or params[0].annotation is not Request
    ):
        raise TypeError(f"{where}: only `async def dep(request: Request)` is served directly")
    return typing.cast(Dependency, fn)


async def _json_body(request: Request) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        return NOT_HERE
    body = await request.body()
    if not body:
        return NOT_HERE
    try:
        return json.loads(body)
    except ValueError:
        return NOT_HERE


def _resolver(
    name: str, annotation: Any, default: Any, route: Any
) -> tuple[Resolver, Dependency | None]:
    """How to get this argument, and the dependency it awaits if it is one (dependencies run
    before the body is read)."""
    where = f"{route.path} ({name})"
    if annotation is Request:
        return _request_itself, None
    meta: tuple[Any, ...] = getattr(annotation, "__metadata__", ())
    base = typing.get_args(annotation)[0] if meta else annotation
    if len(meta) == 1 and isinstance(meta[0], Depends) and meta[0].dependency is not None:
        dependency = _request_only(meta[0].dependency, where)
        return _from_dependency(dependency), dependency
    if len(meta) == 1 and isinstance(meta[0], Header) and meta[0].alias:
        absent = None if default is inspect.Parameter.empty else default
        return _from_header(meta[0].alias.lower(), absent), None
    if meta:
        raise TypeError(f"{where}: this parameter is not served directly")
    if base is uuid.UUID and f"{{{name}}}" in route.path_format:
        return _from_path_uuid(name), None
    if inspect.isclass(base) and issubclass(base, BaseModel):
        return _from_json_body(base), None
    raise TypeError(f"{where}: this parameter is not served directly")


async def _request_itself(request: Request, _: dict[str, str]) -> Any:
    return request


def _from_dependency(dependency: Dependency) -> Resolver:
    """A `Depends(fn)` parameter: `fn(request)`'s answer."""

    async def depends(request: Request, _: dict[str, str]) -> Any:
        return await dependency(request)

    return depends


def _from_header(header: str, absent: Any) -> Resolver:
    """A `Header(alias=...)` parameter; a repeated header is FastAPI's to serve."""

    async def from_header(request: Request, _: dict[str, str]) -> Any:
        values = request.headers.getlist(header)
        if len(values) > 1:
            return NOT_HERE
        return values[0] if values else absent

    return from_header


def _from_path_uuid(name: str) -> Resolver:
    """A `uuid.UUID` path parameter (the route's pattern admits only the canonical form)."""

    async def path_uuid(_: Request, path: dict[str, str]) -> Any:
        return uuid.UUID(path[name])

    return path_uuid


def _from_json_body(model: type[BaseModel]) -> Resolver:
    """The body model, validated from the JSON body as FastAPI does (a large body in a
    worker thread); a body FastAPI would refuse is FastAPI's to serve."""
    adapter: TypeAdapter[Any] = TypeAdapter(model)

    def validate(decoded: Any) -> Any:
        try:
            return adapter.validate_python(decoded, from_attributes=True)
        except ValidationError:
            return NOT_HERE

    async def body(request: Request, _: dict[str, str]) -> Any:
        decoded = await _json_body(request)
        if decoded is NOT_HERE:
            return NOT_HERE
        if len(await request.body()) > OFF_LOOP_BYTES:
            return await anyio.to_thread.run_sync(validate, decoded)
        return validate(decoded)

    return body


def direct_route(route: Any) -> DirectRoute:
    """How to serve `route` directly; TypeError when its signature needs FastAPI or nothing
    it awaits authenticates. `route` is an APIRoute or, for a lazily included router, its
    RouteContext: the route as included (the include's prefix and dependencies, such as
    `include_api_router`'s `authenticate`), which is what FastAPI itself serves."""
    methods = sorted(route.methods or ())
    if len(methods) != 1:
        raise TypeError(f"{route.path}: one method per directly served route")
    method = methods[0]
    pattern = re.escape(route.path_format)
    for name in route.param_convertors:
        pattern = pattern.replace(re.escape(f"{{{name}}}"), f"(?P<{name}>{UUID_TEXT})")
    signature = inspect.signature(route.endpoint)
    returns = typing.get_type_hints(route.endpoint).get("return")
    if not (inspect.isclass(returns) and issubclass(returns, Response)):
        raise TypeError(f"{route.path}: only an endpoint returning a Response is served directly")
    hints = typing.get_type_hints(route.endpoint, include_extras=True)
    arguments = tuple(
        (p.name, *_resolver(p.name, hints.get(p.name, p.annotation), p.default, route))
        for p in signature.parameters.values()
    )
    dependencies = tuple(
        _request_only(d.dependency, route.path) for d in route.dependencies if d.dependency
    )
    calls = frozenset((*dependencies, *(dep for _, _, dep in arguments if dep is not None)))
    if not any(_authenticates(fn) for fn in calls):
        raise TypeError(
            f"{route.path}: a directly served route needs `authenticate` or a `require(...)`"
            " among its own dependencies"
        )
    original = getattr(route, "original_route", route)  # scope["route"], as FastAPI sets it
    return DirectRoute(method, re.compile(pattern), original, arguments, dependencies, calls)


class DirectDispatch:
    """Serves the direct routes; passes everything else to the router unchanged."""

    def __init__(self, app: ASGIApp, routes: Iterable[DirectRoute], owner: FastAPI) -> None:
        self.app = app
        self.owner = owner  # whose `dependency_overrides` are looked at, per request
        self.by_method: dict[str, list[DirectRoute]] = {}
        for r in routes:
            self.by_method.setdefault(r.method, []).append(r)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("query_string") and not scope["root_path"]:
            for candidate in self.by_method.get(scope["method"], ()):
                match = candidate.path.fullmatch(scope["path"])
                if match is not None:
                    overrides = self.owner.dependency_overrides
                    if overrides and not candidate.calls.isdisjoint(overrides):
                        break  # FastAPI applies the override (module docstring)
                    await self._serve(candidate, match.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self, direct: DirectRoute, path: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        request = Request(scope, receive)
        kwargs: dict[str, Any] = {}
        # The checks first, in FastAPI's order (they may raise 401/403): nothing of the body
        # is read for a caller who may not call this route.
        scope["route"], scope["endpoint"], scope["path_params"] = (
            direct.route,
            direct.route.endpoint,
            path,
        )
        for dependency in direct.dependencies:
            await dependency(request)
        for name, resolve, awaited in direct.arguments:
            if awaited is not None:
                kwargs[name] = await resolve(request, path)
        for name, resolve, awaited in direct.arguments:
            if awaited is None:
                value = await resolve(request, path)
                if value is NOT_HERE:
                    await self.app(scope, _replaying(request, receive), send)
                    return
                kwargs[name] = value
        response = await direct.route.endpoint(**kwargs)
        await response(scope, receive, send)


def _replaying(request: Request, receive: Receive) -> Receive:
    """The body the direct path read, handed to FastAPI once more (then the live stream)."""
    body: bytes | None = getattr(request, "_body", None)
    if body is None:
        return receive
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def install(app: FastAPI, endpoints: Iterable[Callable[..., Any]]) -> None:
    """Serve these endpoints directly (each must be a route of `app`); TypeError, at
    start-up, for one that cannot be (its signature, or no authenticating dependency)."""
    try:
        from fastapi.routing import iter_route_contexts

        contexts: list[Any] = list(iter_route_contexts(app.routes))
        routes = {c.endpoint: c for c in contexts if isinstance(c.original_route, APIRoute)}
    except ImportError:  # FastAPI before lazy router inclusion: app.routes is flat
        routes = {r.endpoint: r for r in app.routes if isinstance(r, APIRoute)}
    table = [direct_route(routes[endpoint]) for endpoint in endpoints]
    app.router.middleware_stack = DirectDispatch(app.router.middleware_stack, table, app)
