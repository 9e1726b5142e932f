"""The application factory."""

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine

from app.background import running_background_tasks
from app.core import auth_first, direct, errors, query_params
from app.core.auth import authenticate
from app.core.config import Settings, SettingsError, get_settings, use_settings
from app.core.database_wait import open_when_reachable
from app.core.db import (
    create_engine,
    create_read_engine,
    create_sessionmaker,
    resolve_database_url,
)
from app.core.driver import Database
from app.core.errors import PROBLEM_MEDIA_TYPE, install_error_handlers
from app.core.guard import FailedAuthLimiter, RequestGuardMiddleware
from app.core.methods import install as install_allowed_methods
from app.core.observability import (
    BodySizeLimitMiddleware,
    JsonBodyMiddleware,
    RequestContextMiddleware,
    configure_logging,
)
from app.core.read_replica import ReadReplica
from app.core.retry import RetryConflictsMiddleware
from app.core.signing import get_signer
from app.openapi_export import declare_security
from app.routers import (
    audiences,
    audit,
    bases,
    catalogue,
    changes,
    consent,
    consent_reports,
    decisions,
    imports,
    keys,
    links,
    ops,
    optouts,
    probes,
    proofs,
    retention,
    rights,
    subjects,
    sync_events,
    sync_failures,
    webhook_endpoints,
    webhooks,
)
from app.services.access import key_fingerprints
from app.web import auditor as web_auditor
from app.web import confirm as confirm_pages
from app.web import console as web_console
from app.web import docs as web_docs
from app.web import person as person_pages

# Routers whose routes need no API key: liveness and readiness, the person's pages (the
# signed token is the credential), the MailChimp webhook (its `secret` query parameter) and
# the public signing keys (nothing secret: whoever holds a receipt must verify it). Each
# path is also named in app.core.guard's public paths. Every other router is included with
# authentication as its default, so a route cannot ship without it.
PUBLIC_ROUTERS = (
    person_pages,
    confirm_pages,
    webhooks,
    keys,
)  # no key; the probes are included first
# Routes whose callers add query parameters of their own (MailChimp; e-mail clients and
# link trackers on the person's pages): any query parameter is accepted there. Every other
# route refuses one it does not declare (app.core.query_params).
QUERY_EXEMPT_ROUTERS = (person_pages.router, confirm_pages.router, webhooks.router)
# Routers are matched in this order, each one's routes in turn (FastAPI 0.16x walks every
# included router until one matches, then matches it again): the hot paths come first.
API_ROUTERS = (
    decisions,
    consent,
    subjects,
    ops,
    bases,
    optouts,
    rights,
    changes,
    catalogue,
    audit,
    links,
    retention,
    proofs,
    audiences,
    sync_events,
    sync_failures,
    consent_reports,
    imports,
    webhook_endpoints,
)

# The hottest endpoints, served by app.core.direct without FastAPI's route walk and
# dependency solving (the same endpoint functions; anything unusual falls through).
DIRECT_ENDPOINTS = (
    decisions.create_decision,
    decisions.create_decision_batch,
    consent.create_consent_event,
    subjects.get_subject,
)

API_DESCRIPTION = (
    "Records consent events, marketing opt-outs and data-subject-rights requests, and "
    "decides under GDPR Article 6 whether processing a person's data for a purpose is "
    "lawful, saying why. Errors are RFC 9457 `application/problem+json` documents."
)


def _operation_id(route: APIRoute) -> str:
    # Stable ids for generated clients: the handler's name, unique across the app.
    return route.name


def _sessionmaker(engine: AsyncEngine, session_bind: Any) -> Any:
    if session_bind is None:
        return create_sessionmaker(engine)
    # A test's connection with an open transaction: each request commits a savepoint.
    return create_sessionmaker(session_bind, join_transaction_mode="create_savepoint")


def _read_side(
    app: FastAPI, settings: Settings, session_bind: Any, read_engine: AsyncEngine | None
) -> None:
    """app.state.read_engine / read_sessionmaker: the replica's, or the primary's. A test's
    bound connection is used for both unless the test passes its own read engine."""
    app.state.read_replica = None  # no replica: every read on the primary
    if read_engine is None and session_bind is not None:
        app.state.read_engine = app.state.engine
        app.state.read_sessionmaker = app.state.sessionmaker
        return
    app.state.read_engine = read_engine or create_read_engine(settings, app.state.engine)
    if app.state.read_engine is app.state.engine:
        app.state.read_sessionmaker = app.state.sessionmaker
        return
    app.state.read_sessionmaker = create_sessionmaker(app.state.read_engine)
    app.state.read_replica = ReadReplica(
        app.state.read_engine, settings.read_max_lag_seconds, settings.readyz_timeout_seconds
    )


def create_app(
    settings: Settings | None = None,
    *,
    engine: AsyncEngine | None = None,
    session_bind: Any = None,
    read_engine: AsyncEngine | None = None,
) -> FastAPI:
    """Build the app. Tests pass an engine and a connection to bind sessions to (and may
    pass a separate engine standing in for a read replica)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="consent-api",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=_lifespan(settings, engine, session_bind, read_engine),
        generate_unique_id_function=_operation_id,
        docs_url=None,  # served offline by app.web.docs
        redoc_url=None,
        redirect_slashes=False,  # issue 14: a redirect would reflect the Host header
        # No OpenTelemetry here (metrics are Prometheus, /metrics): without this FastAPI asks
        # OpenTelemetry for its three providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    if engine is not None:  # usable without running the lifespan (tests)
        _bind_given_engine(app, settings, engine, session_bind, read_engine)
    errors.RETRY_AFTER_SECONDS = settings.retry_after_seconds
    install_error_handlers(app)
    _install_middleware(app, settings)
    _install_routes(app, settings)
    return app


def _lifespan(
    settings: Settings,
    engine: AsyncEngine | None,
    session_bind: Any,
    read_engine: AsyncEngine | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: opens what the app was not given (engine, driver pool, read
    side), runs the background tasks, and closes only what it opened."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        use_settings(settings)  # the background tasks started here read these
        own_engine = engine is None
        if own_engine:
            url = await resolve_database_url(settings)
            app.state.engine = create_engine(url, settings)
            # Hot paths' own asyncpg pool (app.core.driver), opened in full now.
            app.state.database = await open_when_reachable(url, settings)
        app.state.sessionmaker = _sessionmaker(app.state.engine, session_bind)
        if own_engine:
            await _refuse_a_wrong_hash_key(app, settings)
        _read_side(app, settings, session_bind, read_engine)
        try:
            async with running_background_tasks(app.state.sessionmaker, get_signer(settings)):
                # What start-up built lives as long as the process: keep it out of every
                # later collection (shorter GC pauses, lower p99).
                gc.collect()
                gc.freeze()
                yield
        finally:
            if app.state.read_engine is not app.state.engine and read_engine is None:
                await app.state.read_engine.dispose()
            if own_engine:
                await app.state.database.close()
                await app.state.engine.dispose()

    return lifespan


def _bind_given_engine(
    app: FastAPI,
    settings: Settings,
    engine: AsyncEngine,
    session_bind: Any,
    read_engine: AsyncEngine | None,
) -> None:
    """A test's engine (and connection) on app.state, so the app is usable without
    running the lifespan."""
    app.state.engine = engine
    app.state.sessionmaker = _sessionmaker(engine, session_bind)
    app.state.database = (
        Database(bound=session_bind) if session_bind is not None else Database(engine=engine)
    )
    _read_side(app, settings, session_bind, read_engine)


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    """The middleware stack, innermost first (each add_middleware wraps the ones before)."""
    app.add_middleware(RetryConflictsMiddleware)  # innermost: replays a limited body
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        path_limits={imports.IMPORT_PATH: settings.import_max_bytes},
    )
    app.add_middleware(JsonBodyMiddleware)
    app.state.auth_limiter = FailedAuthLimiter(
        settings.auth_failures_allowed, settings.auth_failure_window_seconds
    )
    app.add_middleware(
        RequestGuardMiddleware,
        limiter=app.state.auth_limiter,
        max_header_bytes=settings.http_max_header_bytes,
    )
    app.add_middleware(RequestContextMiddleware, settings=settings)


def _install_routes(app: FastAPI, settings: Settings) -> None:
    """The routers, in matching order, then the wrappers around the routing (the 405 rule
    last, so outermost)."""
    app.include_router(probes.router)  # no key; two routes, polled often: first
    for module in API_ROUTERS:
        include_api_router(app, module.router)
    for module in PUBLIC_ROUTERS:
        app.include_router(module.router)
    web_docs.install(app)  # no API key (docs)
    web_auditor.install(app)  # authenticates itself (bearer or page session)
    web_console.install(app)  # the privacy team's console: the same, with its own cookie
    # The wrappers around the routing, innermost first; each reads every route, so they
    # come once all are added.
    if settings.direct_routes:
        direct.install(app, DIRECT_ENDPOINTS)
    query_params.install(app, exempt=query_params.exempt_endpoints(*QUERY_EXEMPT_ROUTERS))
    auth_first.install(app)  # every key and scope checked before a body is read
    _problem_media_types(app)
    install_allowed_methods(app)  # last: 405s, literal paths; outside the other wrappers


async def _refuse_a_wrong_hash_key(app: FastAPI, settings: Settings) -> None:
    """A worker started another way than `serve` (which checks first) checks for itself."""
    async with app.state.sessionmaker() as session:
        try:
            await key_fingerprints.check_hash_key(session, settings)
        except key_fingerprints.WrongHashKey as exc:
            raise SettingsError(f"consent-api: {exc}") from None
        await session.commit()


def include_api_router(app: FastAPI, router: APIRouter) -> None:
    """Authentication is the default: every route needs a valid key. Routes add their
    scope with `require(scope)`, which reuses the principal (no second lookup)."""
    app.include_router(router, dependencies=[Depends(authenticate)])


def _problem_media_types(app: FastAPI) -> None:
    """Error responses are documented under application/problem+json only; keyed operations
    declare the bearer scheme (app.openapi_export)."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = base_openapi()
        for methods in spec.get("paths", {}).values():
            for op in methods.values():
                for code, response in op.get("responses", {}).items():
                    content = response.get("content", {})
                    if code[0] in "45" and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        errors.document_common_problems(spec)
        declare_security(spec)
        query_params.document(spec, app, query_params.exempt_endpoints(*QUERY_EXEMPT_ROUTERS))
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory app.main:app_factory` (each worker process)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
