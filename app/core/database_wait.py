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

log = logging.getLogger("consent_api.db")

# What a database answers while it is briefly unreachable: it is starting, shutting down or
# recovering (57P03, 57P01, 57P02), out of connection slots or memory (class 53), refusing
# connections to this database for now (55000), or a connection failure (class 08).
TRANSIENT = (
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InsufficientResourcesError,
    asyncpg.PostgresConnectionError,
)


def is_unreachable(error: BaseException) -> bool:
    """Whether waiting can help. A wrong password (28P01) or database name (3D000), a
    certificate that does not verify, and PgBouncer's own refusals (08P01: unknown
    database, failed login) fail at once: waiting would only hide the mistake."""
    if isinstance(error, asyncpg.ProtocolViolationError | ssl.SSLCertVerificationError):
        return False
    if isinstance(error, asyncpg.ObjectNotInPrerequisiteStateError):
        return error.sqlstate == "55000"  # "database ... is not currently accepting connections"
    return isinstance(error, (*TRANSIENT, OSError))  # OSError: refused, reset, timed out, DNS


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
