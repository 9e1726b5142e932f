"""A worker's start-up waits for a database it cannot reach yet.

uvicorn replaces a worker that dies; if the replacement fails its start-up (exit code 3), it
stops every worker and closes the port. A replacement that meets a database restarting,
failing over or out of connection slots must therefore wait for it, not fail. It waits up
to `db_startup_wait_seconds`, and stops waiting as soon as the process is asked to stop
(SIGTERM, SIGINT), so that stopping the service during an outage stays prompt.
"""

import logging
import signal
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from app.core.config import Settings
from app.core.driver import Database
from app.core.errors import is_unavailable

log = logging.getLogger("consent_api.db")

# Refusals that look like outages but are mistakes, which waiting would only hide:
# PgBouncer's own (08P01: unknown database, failed login), a certificate that does not
# verify (an OSError), a database that was dropped (57P04).
MISTAKES = (
    asyncpg.ProtocolViolationError,
    ssl.SSLCertVerificationError,
    asyncpg.DatabaseDroppedError,
)


def is_unreachable(error: BaseException) -> bool:
    """Whether waiting can help: what a request would answer with a 503 (the database is
    restarting, failing over, out of connection slots, or the network fails: errors'
    `is_unavailable`), or the database refuses connections for now (55000), and not one of
    the mistakes above. A wrong password (28P01) or database name (3D000) fails at once."""
    if isinstance(error, MISTAKES):
        return False
    return is_unavailable(error) or getattr(error, "sqlstate", None) == "55000"


@contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """An event set when SIGTERM or SIGINT arrives; uvicorn's own handlers still run (they
    only note the request while start-up runs, which is why the wait must look itself)."""
    stopping = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def note(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)
        else:  # the default action (or none): as if this handler had not been here
            signal.signal(signum, handler)
            signal.raise_signal(signum)

    for sig in previous:
        signal.signal(sig, note)
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _log_wait(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "waiting for the database",
        extra={"attempt": state.attempt_number, "error_class": type(error).__name__},
    )


async def open_when_reachable(url: str, settings: Settings) -> Database:
    """`Database.open`, waiting for a database that cannot be reached yet (see above)."""
    with _stop_requests() as stopping:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_unreachable),
            stop=stop_after_delay(settings.db_startup_wait_seconds) | stop_when_event_set(stopping),
            wait=wait_exponential(multiplier=0.25, max=5),
            before_sleep=_log_wait,
            reraise=True,
        ):
            with attempt:
                database = await Database.open(url, settings)
                if attempt.retry_state.attempt_number > 1:
                    log.warning(
                        "database reachable", extra={"attempt": attempt.retry_state.attempt_number}
                    )
                return database
    raise AssertionError("unreachable: tenacity re-raises the last error")
