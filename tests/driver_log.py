"""Counting the statements a service sends on the driver connection (round trips)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app.core.driver import connection_of


@asynccontextmanager
async def statements_sent(session: Any) -> AsyncIterator[list[str]]:
    """Every statement asyncpg runs on the session's connection inside the block."""
    con = await connection_of(session)
    sent: list[str] = []

    def log(query: Any) -> None:
        sent.append(query.query)

    con.add_query_logger(log)
    try:
        yield sent
        await asyncio.sleep(0)  # asyncpg calls loggers soon after, not during, the query
    finally:
        con.remove_query_logger(log)
