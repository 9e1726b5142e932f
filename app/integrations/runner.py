"""What every sync worker shares: one transaction per step (the worker is its own commit
point, like a request), its identity in decisions and audit entries, and how it rides out
a database outage."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from app.core.config import Settings
from app.core.errors import is_unavailable

T = TypeVar("T")
log = logging.getLogger("consent_api.sync")
OUTAGE_BACKOFF_CAP_SECONDS = 30.0


async def in_transaction(maker: Any, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
    """Run one service call in its own transaction and commit it."""
    async with maker() as session:
        result = await fn(session, *args, **kw)
        await session.commit()
        return result


async def in_rollback(maker: Any, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
    """Run one service call and roll it back: a read, or a dry run's step (the decisions it
    would store are not kept)."""
    async with maker() as session:
        try:
            return await fn(session, *args, **kw)
        finally:
            await session.rollback()


def database_unavailable(exc: BaseException) -> bool:
    """The database went away under the worker (stopped, restarting, frozen past the command
    timeout), wherever in a task group it surfaced. Anything else is a real fault."""
    if isinstance(exc, BaseExceptionGroup):
        return all(database_unavailable(inner) for inner in exc.exceptions)
    return is_unavailable(exc)


async def run_forever(run_once: Callable[[], Awaitable[None]], settings: Settings) -> None:
    """Pass after pass, `sync_poll_seconds` apart. When the database is unavailable the pass
    is abandoned and tried again after a growing pause: the position lives in `sync_state`
    and advances only after a batch's calls succeeded, so the next pass resumes where the
    last recorded batch ended, repeating at most the batch that was interrupted."""
    pause = max(0.1, settings.sync_backoff_seconds)
    while True:
        try:
            await run_once()
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            log.warning(
                "database unavailable; the sync resumes from its saved position",
                extra={"retry_in_s": round(pause, 2), "error": type(exc).__name__},
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, OUTAGE_BACKOFF_CAP_SECONDS)
            continue
        pause = max(0.1, settings.sync_backoff_seconds)
        await asyncio.sleep(settings.sync_poll_seconds)
