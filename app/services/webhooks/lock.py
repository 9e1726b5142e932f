"""One delivery worker per database: a session-level advisory lock on a connection of its
own, held for a worker's pass (the pass itself commits many times, so a transaction-level
lock would not last). A process that dies drops its connection, and the lock with it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

WORKER_LOCK = 7_310_554  # beside the change-feed sequencer's 7_310_553


@asynccontextmanager
async def single_worker(bind: Any) -> AsyncIterator[bool]:
    """True while this process is the database's one delivery worker. A session-level lock
    on a connection of its own (the work itself commits many times); a process that dies
    drops its connection and so the lock."""
    if isinstance(bind, AsyncEngine):
        async with bind.connect() as con:
            async with _locked(con) as got:
                yield got
    else:  # a test's one connection
        async with _locked(bind) as got:
            yield got


@asynccontextmanager
async def _locked(con: AsyncConnection) -> AsyncIterator[bool]:
    got = bool((await con.execute(text(f"SELECT pg_try_advisory_lock({WORKER_LOCK})"))).scalar())
    try:
        yield got
    finally:
        if got:
            await con.execute(text(f"SELECT pg_advisory_unlock({WORKER_LOCK})"))
