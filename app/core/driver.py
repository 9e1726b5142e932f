"""Hot paths at the database's pace: asyncpg connections, no ORM session.

The ORM session (unit of work, greenlet hop, separate BEGIN and COMMIT round trips) stays
for cold paths (`SessionDep`). A hot path instead takes the app's `Database` and asks for
the connection mode its work needs:

    from app.core.driver import DatabaseDep, prepare

    LOOKUP = prepare("SELECT ... WHERE id = :id", id="uuid")   # once, at import

    @router.get("/v1/things/{thing_id}")
    async def get_thing(thing_id: uuid.UUID, db: DatabaseDep) -> Response:
        async with db.autocommit() as con:          # one statement: atomic by itself
            row = await LOOKUP.fetchrow(con, id=thing_id)
        return json_response(dict(row))             # orjson, no response re-validation

- `db.autocommit()`: statements run as they come, each atomic by itself (a statement with
  data-modifying CTEs included): one round trip each, no BEGIN or COMMIT around them.
- `db.transaction()`: a real transaction, for several statements that must be atomic.
- `prepare(sql, **casts)`: named `:params` become asyncpg's `$n` once; `casts` types the
  parameters PostgreSQL cannot infer (a NULL, `:x IS NULL`). asyncpg prepares each
  statement once per connection and reuses it (one Bind/Execute round trip afterwards).
- Rows are `Row`s: `row["id"]` and `row.id` both work, like SQLAlchemy rows.
- A write that takes an `Idempotency-Key`: `app.core.idempotency.run_once(db, principal,
  request, body, create)` picks the mode (autocommit, or `atomic=True` for several
  statements) and puts key and write in one transaction when a key is sent.
- Errors: asyncpg's own exceptions reach the same problem handlers as SQLAlchemy's
  (SQLSTATE class 22 is a 422, class 23 a 409).
- A service written for a driver connection accepts an `AsyncSession` too: `await
  connection_of(session)` hands back the session's own connection, inside its transaction,
  so cold paths (and tests with `db`) can call it unchanged.

Where the connections come from:
- In production, a native asyncpg pool owned by the app (opened in the lifespan), sized
  `db_pool_size` with min = max: opened once, never closed under load (no overflow churn),
  and released without asyncpg's reset round trip (hot paths leave no session state: no
  SET, no session advisory locks, no LISTEN). `synchronous_commit` stays on.
- Tests bind the app to one connection with an outer transaction that is rolled back
  (`create_app(..., session_bind=conn)`): both modes then run inside a savepoint of it.
- An app built with an engine but not started (some tests) borrows engine connections.
"""

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import StrEnum
from typing import Annotated, Any, TypeAlias

import asyncpg
import orjson
from fastapi import Depends, Request, Response
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.core.config import Settings
from app.core.outage import connecting

# asyncpg ships no type information: a connection is typed as what it is, loosely.
Conn: TypeAlias = asyncpg.Connection
JSON = "application/json"
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Row(asyncpg.Record):
    """An asyncpg record whose columns also read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Prepared:
    """SQL with named parameters, rewritten once to asyncpg's positional form."""

    def __init__(self, sql: str, casts: dict[str, str]) -> None:
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.names:
                self.names.append(name)
            n = self.names.index(name) + 1
            return f"${n}::{casts[name]}" if name in casts else f"${n}"

        self.sql = _PARAM.sub(number, sql)

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]

    async def fetch(self, con: Conn, **params: Any) -> list[Row]:
        return await con.fetch(self.sql, *self.args(params), record_class=Row)

    async def fetchrow(self, con: Conn, **params: Any) -> Row | None:
        return await con.fetchrow(self.sql, *self.args(params), record_class=Row)

    async def execute(self, con: Conn, **params: Any) -> str:
        return await con.execute(self.sql, *self.args(params))


def prepare(sql: str, **casts: str) -> Prepared:
    return Prepared(sql, casts)


def json_response(payload: Any, status_code: int = 200, **kwargs: Any) -> Response:
    """orjson-encoded answer of what the code built (UUIDs and datetimes as pydantic writes
    them: UTC as `Z`); FastAPI does not validate a returned Response again."""
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Response(body, status_code=status_code, media_type=JSON, **kwargs)


def _encode_other(value: Any) -> Any:
    # asyncpg's own UUID class is not one orjson knows; models built by cold helpers.
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(type(value).__name__)


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, default=_encode_other, option=orjson.OPT_UTC_Z)


async def _no_reset(_: Conn) -> None:
    return None


def connect_kwargs(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "user": parsed.username,
        "password": parsed.password,
        "host": parsed.query.get("host") or parsed.host,
        "port": parsed.port,
        "database": parsed.database,
    }
    # TLS as the URL asks (`ssl=require`, or libpq's `sslmode=`), as SQLAlchemy's engine
    # does: without it the hot paths' pool would quietly fall back to asyncpg's `prefer`.
    ssl_mode = parsed.query.get("ssl") or parsed.query.get("sslmode")
    if isinstance(ssl_mode, str):
        kwargs["ssl"] = ssl_mode
    return kwargs


async def _ensure_outer_transaction(bound: AsyncConnection) -> Conn:
    """The driver connection under a test's connection, its transaction begun for real
    (SQLAlchemy's asyncpg adapter begins lazily, at the first statement)."""
    raw = await bound.get_raw_connection()
    driver: Conn = raw.driver_connection
    if not driver.is_in_transaction():
        await bound.exec_driver_sql("SELECT 1")
    return driver


def pool_options(url: str, settings: Settings) -> dict[str, Any]:
    """The app's asyncpg pool: `db_pool_size` connections, opened in full at start-up.
    Bounded waits everywhere (connect, each command, the server's statement timeout, the
    queue for a connection), so that an outage is a prompt 503 (app.core.outage)."""
    size = settings.db_pool_size
    return {
        **connect_kwargs(url),
        "min_size": size,
        "max_size": size,
        "reset": _no_reset,
        # Behind PgBouncer < 1.21 in transaction mode: unnamed statements only.
        "statement_cache_size": 0 if not settings.db_prepared_statements else 100,
        "timeout": settings.db_connect_timeout_seconds,
        "command_timeout": settings.db_command_timeout_seconds,
        "server_settings": {
            **SERVER_SETTINGS,
            "statement_timeout": str(settings.db_statement_timeout_ms),
        },
    }


class UnitOfWork(StrEnum):
    """What a service function declares it is: one statement, atomic by itself (autocommit:
    one round trip), or several statements that must commit together (a transaction)."""

    STATEMENT = "statement"
    TRANSACTION = "transaction"


class Database:
    """Where hot paths get their connection: a pool, a test's connection, or an engine."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool | None = None,
        bound: AsyncConnection | None = None,
        engine: AsyncEngine | None = None,
        acquire_timeout: float | None = None,
    ) -> None:
        self.pool, self.bound, self.engine = pool, bound, engine
        # How long a request queues for a pooled connection before it gets a 503.
        self.acquire_timeout = acquire_timeout

    @classmethod
    async def open(cls, url: str, settings: Settings) -> "Database":
        with connecting():  # at start-up: app.core.database_wait waits out an outage
            pool = await asyncpg.create_pool(**pool_options(url, settings))
        return cls(pool=pool, acquire_timeout=settings.db_pool_timeout_seconds)

    def can_run_beside(self) -> bool:
        """Whether one more piece of background work (a stream's next chunk) may take a
        connection now: while more than half the pool is idle, so that the hot paths keep
        theirs; always on an engine's connections; never on a test's one connection."""
        if self.pool is not None:
            return self.pool.get_idle_size() > self.pool.get_max_size() // 2
        return self.bound is None

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    def unit(self, unit: "UnitOfWork") -> AbstractAsyncContextManager[Conn]:
        """A connection for the unit of work a service declared (never a router's choice)."""
        return self.transaction() if unit is UnitOfWork.TRANSACTION else self.autocommit()

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Conn]:
        """Each statement commits by itself: for work that is one statement."""
        if self.pool is not None:
            async with self._pooled() as con:
                yield con
        else:
            async with self._borrowed(transaction=False) as con:
                yield con

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """One transaction around the block: for statements that must be atomic together."""
        if self.pool is not None:
            async with self._pooled() as con, con.transaction():
                yield con
        else:
            async with self._borrowed(transaction=True) as con:
                yield con

    @asynccontextmanager
    async def _pooled(self) -> AsyncIterator[Conn]:
        """A connection from the app's pool. What fails while getting one is marked as
        raised while connecting (app.core.outage): nothing of the request was sent yet."""
        pool = self.pool
        assert pool is not None
        full = pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()
        with connecting(exhausted=full):
            con = await pool.acquire(timeout=self.acquire_timeout)
        try:
            yield con
        finally:
            await pool.release(con)

    @asynccontextmanager
    async def _borrowed(self, *, transaction: bool) -> AsyncIterator[Conn]:
        if self.bound is not None:
            # A savepoint in the test's transaction: a failed request undoes only itself.
            driver = await _ensure_outer_transaction(self.bound)
            async with driver.transaction():
                yield driver
            return
        assert self.engine is not None
        async with self.engine.connect() as conn:  # its pool marks connect errors (app.core.db)
            raw = await conn.get_raw_connection()
            pooled: Conn = raw.driver_connection
            if transaction:
                async with pooled.transaction():
                    yield pooled
            else:
                yield pooled


# The same session settings as the engine's (app.core.db.create_engine).
SERVER_SETTINGS = {
    "application_name": "consent-api",
    "timezone": "UTC",
    "plan_cache_mode": "force_generic_plan",
}


async def connection_of(con: "Conn | AsyncSession") -> Conn:
    """The driver connection to run on: `con` itself, or a session's connection inside the
    session's transaction (begun for real, so driver statements are part of it)."""
    if not isinstance(con, AsyncSession):
        return con
    bound = await con.connection()
    return await _ensure_outer_transaction(bound)


async def get_database(request: Request) -> Database:
    # async: FastAPI would run a plain function in its thread pool, a hop per request.
    database: Database = request.app.state.database
    return database


DatabaseDep = Annotated[Database, Depends(get_database)]
