"""A 500 is debuggable from its log line alone (exception types and frames: file, line,
function) without a value in it; and what is and is not a database outage (the faults
themselves are provoked for real in tests/test_faults_unreachable.py and
tests/test_faults_outage.py)."""

import json
import logging
import socket

import asyncpg
import pytest
from sqlalchemy.exc import OperationalError

from app.core.driver import get_database
from app.core.observability import JsonFormatter
from app.core.outage import Outage, classify, connecting
from app.integrations.runner import database_unavailable

EMAIL = "ann.other@example.com"


async def _exploding_database() -> None:
    try:
        {}["missing"]  # the first exception of the chain
    except KeyError as first:
        raise RuntimeError(f"no database for {EMAIL}") from first


RAISED_AT = _exploding_database.__code__.co_firstlineno + 4  # the `raise` above


def _unhandled(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    found = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert len(found) == 1, [r.getMessage() for r in caplog.records]
    return found[0]


async def test_a_500_logs_the_exception_chain_with_frames_and_no_values(app, client, caplog):
    """The route is real (/readyz); only its database dependency is replaced, by one that
    raises with an e-mail address in the message and another exception as its cause."""
    app.dependency_overrides[get_database] = _exploding_database
    with caplog.at_level(logging.INFO):
        r = await client.get("/readyz")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert EMAIL not in r.text and "RuntimeError" not in r.text and "frames" not in r.text
    record = _unhandled(caplog)
    line = JsonFormatter().format(record)
    logged = json.loads(line)
    assert logged["error_class"] == "RuntimeError"
    chain = logged["error_chain"]
    assert [e["type"] for e in chain] == ["RuntimeError", "KeyError"]
    innermost = chain[0]["frames"][-1]  # where the planted error was raised
    assert innermost["file"].endswith("tests/test_unexpected_errors.py"), innermost
    assert (innermost["line"], innermost["function"]) == (RAISED_AT, "_exploding_database")
    assert any(f["file"] == "app/core/observability.py" for f in chain[0]["frames"])
    assert all(set(f) == {"file", "line", "function"} for e in chain for f in e["frames"])
    # No message, no local variable, no source line: the address appears nowhere.
    assert EMAIL not in line and "missing" not in line and "Traceback" not in line
    assert EMAIL not in json.dumps(record.__dict__, default=str)


async def test_a_database_error_that_is_no_outage_logs_its_sqlstate(app, client, caplog):
    """A wrong password is a mistake, not an outage: a 500, its SQLSTATE logged (a code,
    not data), never the server's message."""

    async def refused() -> None:
        raise asyncpg.InvalidPasswordError(f'password authentication failed for "{EMAIL}"')

    app.dependency_overrides[get_database] = refused
    with caplog.at_level(logging.INFO):
        r = await client.get("/readyz")
    assert r.status_code == 500
    line = JsonFormatter().format(_unhandled(caplog))
    assert json.loads(line)["error_chain"][0]["sqlstate"] == "28P01"
    assert EMAIL not in line


def _raised(exc: BaseException, *, while_connecting: bool = False) -> BaseException:
    """`exc` as it is met: raised (with a traceback), optionally while connecting."""
    try:
        if while_connecting:
            with connecting():
                raise exc
        raise exc
    except BaseException as caught:
        return caught


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        # The same TimeoutError: sent nothing while connecting, maybe stored after.
        (_raised(TimeoutError(), while_connecting=True), Outage.UNREACHABLE),
        (_raised(TimeoutError()), Outage.TIMED_OUT),
        # Any OSError while connecting; a missing file elsewhere is a bug, not an outage.
        (_raised(FileNotFoundError(2, "No such file"), while_connecting=True), Outage.UNREACHABLE),
        (_raised(FileNotFoundError(2, "No such file")), None),
        (_raised(socket.gaierror(-2, "Name or service not known")), Outage.UNREACHABLE),
        (_raised(ConnectionResetError(104, "reset")), Outage.LOST),
        # By SQLSTATE class, wherever it sits in the chain.
        (asyncpg.CannotConnectNowError("starting up"), Outage.UNREACHABLE),
        (asyncpg.TooManyConnectionsError("too many"), Outage.UNREACHABLE),
        (asyncpg.AdminShutdownError("terminating connection"), Outage.LOST),
        (
            asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
            Outage.TIMED_OUT,
        ),
        (asyncpg.QueryCanceledError("canceling statement due to user request"), Outage.CANCELLED),
        (asyncpg.DiskFullError("disk full"), Outage.BUSY),
        (asyncpg.DeadlockDetectedError("deadlock"), Outage.BUSY),
        (asyncpg.UniqueViolationError("duplicate key"), None),
        (_chained(RuntimeError("wrapped"), asyncpg.AdminShutdownError("x")), Outage.LOST),
        (OperationalError("SELECT 1", {}, asyncpg.AdminShutdownError("x")), Outage.LOST),
        # asyncpg says "closed" only in words; other InterfaceErrors are misuse (a bug).
        (
            asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
            Outage.LOST,
        ),
        (
            asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
            None,
        ),
        # The protocol put out of step by the server's FATAL message while idle.
        (
            asyncpg.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            ),
            Outage.LOST,
        ),
        (asyncpg.InternalClientError("no decoder for OID 1234"), None),
        # An exception group is an outage when each member is; maybe-stored wins.
        (ExceptionGroup("g", [ConnectionRefusedError(), TimeoutError()]), Outage.TIMED_OUT),
        (ExceptionGroup("g", [ConnectionRefusedError(), ValueError()]), None),
    ],
)
def test_outages_are_classified_by_kind(exc, kind):
    assert classify(exc) is kind
    assert database_unavailable(exc) is (kind is not None)  # the sync worker's view
