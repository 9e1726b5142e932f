"""A worker that dies is replaced, and its replacement waits for the database instead of
stopping the whole service. uvicorn stops every worker and closes the port when a worker
fails its start-up (exit code 3, "failed to start, stopping the parent process"), so a
replacement that met a database restarting, failing over or saturated would take the whole
service down with it."""

import asyncio
import json
import logging
import os
import signal
import ssl
import subprocess
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.core.database_wait import is_unreachable
from app.core.observability import JsonFormatter
from tests.live_service import admin_url_of, fresh_database, raw_connection, running_service

pytestmark = pytest.mark.pg_independent  # see pyproject.toml's markers


def _workers_of(pid: int) -> set[int]:
    """The uvicorn workers (spawned children) of a `serve` process."""
    workers = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.add(int(child))
        except OSError:  # reaped between the two reads
            continue
    return workers


async def _log_line(log: Path, text: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The first JSON line of the service's log holding `text`, waiting up to 60 s."""
    for _ in range(300):
        for line in _text(log).splitlines():
            if text in line:
                return dict(json.loads(line))
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {text!r} in the log: {_text(log)[-2000:]}")


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def _text(log: Path) -> str:
    return log.read_text()


async def _allow_connections(admin_url: str, database: str, allowed: bool) -> None:
    admin = await raw_connection(admin_url)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
    finally:
        await admin.close()


async def _kill_a_worker_during_an_outage(
    admin_url: str, database: str, proc: subprocess.Popen[bytes], log: Path
) -> tuple[int, dict[str, Any]]:
    """Refuse connections to `database`, SIGKILL one worker, and wait until its replacement
    says it waits; returns the killed pid and that log line. Connections stay refused."""
    workers = _workers_of(proc.pid)
    assert len(workers) == 2, workers
    await _allow_connections(admin_url, database, False)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    # uvicorn notices within half a second and starts a replacement, which meets a
    # database that refuses it.
    waiting = await _log_line(log, "waiting for the database", proc)
    return victim, waiting


@pytest.fixture
async def own_database(database_url: str) -> AsyncIterator[tuple[str, str, str]]:
    """A migrated database of the test's own: (admin URL, name, URL). Connections to it are
    allowed again afterwards, whatever the test left."""
    admin_url = admin_url_of(database_url)
    url = await fresh_database(admin_url, "consent_restart")
    database = make_url(url).database
    assert database
    yield admin_url, database, url
    await _allow_connections(admin_url, database, True)


async def test_a_worker_restarted_while_the_database_refuses_waits_for_it(own_database, tmp_path):
    admin_url, database, url = own_database
    with running_service(url, tmp_path, workers="2", db_pool_size="2") as (base, proc):
        log = next(tmp_path.glob("service-*.log"))
        before = _workers_of(proc.pid)
        victim, waiting = await _kill_a_worker_during_an_outage(admin_url, database, proc, log)
        assert waiting["error_class"] == "ObjectNotInPrerequisiteStateError"
        await asyncio.sleep(2)  # more attempts, while the service keeps its port
        assert proc.poll() is None, "the service stopped when its new worker met the outage"
        await _allow_connections(admin_url, database, True)
        # The replacement finishes its start-up once the database lets it in.
        reachable = await _log_line(log, "database reachable", proc)
        assert reachable["level"] == "warning" and reachable["attempt"] > 1
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/readyz")).status_code == 200
        workers = _workers_of(proc.pid)
        assert len(workers) == 2 and victim not in workers and workers - before, _text(log)
        assert proc.poll() is None
    text = _text(log)
    deaths = [json.loads(line) for line in text.splitlines() if f"[{victim}] died" in line]
    assert [d["level"] for d in deaths] == ["warning"], text[-2000:]  # seen at level WARNING
    assert "Traceback" not in text and "startup failed" not in text, text[-2000:]


async def test_stopping_the_service_while_a_worker_waits_is_prompt(own_database, tmp_path):
    """A waiting worker hears SIGTERM (uvicorn's handler only notes it during start-up): the
    service stops without waiting out `db_startup_wait_seconds` (300 s by default)."""
    admin_url, database, url = own_database
    with running_service(url, tmp_path, workers="2", db_pool_size="2") as (_base, proc):
        log = next(tmp_path.glob("service-*.log"))
        await _kill_a_worker_during_an_outage(admin_url, database, proc, log)
        workers = _workers_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        # Not a timing check: 60 s is a fifth of the wait the worker would otherwise do.
        await asyncio.to_thread(proc.wait, 60)
        assert not _alive(workers), "workers left behind"


@pytest.mark.parametrize(
    ("error", "waits"),
    [
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), True),
        (asyncpg.ObjectNotInPrerequisiteStateError("not currently accepting connections"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError(), True),
        (asyncpg.InvalidPasswordError("password authentication failed"), False),
        (asyncpg.InvalidCatalogNameError('database "x" does not exist'), False),
        (asyncpg.ProtocolViolationError("no such database: x"), False),  # PgBouncer's refusal
        (asyncpg.CantChangeRuntimeParamError("55P02"), False),
        (ssl.SSLCertVerificationError("certificate verify failed"), False),
    ],
)
def test_only_an_unreachable_database_is_waited_for(error, waits):
    assert is_unreachable(error) is waits


def test_a_traceback_logged_as_a_message_is_reduced_to_its_class():
    """uvicorn logs a failed start-up as Starlette's formatted traceback: the log line keeps
    the class raised, not the frames, nor the detail (which may hold SQL or a value)."""
    try:
        try:
            raise ValueError("first")
        except ValueError as first:
            raise asyncpg.UniqueViolationError(
                "duplicate key\nDETAIL: Key (email)=(ann@example.com) exists."
            ) from first
    except asyncpg.UniqueViolationError:
        text = traceback.format_exc()
    assert text.startswith("Traceback") and "ann@example.com" in text
    line = JsonFormatter().format(_record(text))
    out = json.loads(line)
    assert out["error_class"] == "UniqueViolationError"
    assert out["msg"] == "unhandled exception (traceback withheld)"
    assert "ann@example.com" not in line and "File " not in line and "\\n" not in line
    # A message with indented and bare lines of its own, and an exception group.
    try:
        raise RuntimeError("bad row\n  detail\nann\nmore")
    except RuntimeError:
        text = traceback.format_exc()
    out = json.loads(JsonFormatter().format(_record(text)))
    assert (out["error_class"], "ann" in json.dumps(out)) == ("RuntimeError", False)
    try:
        raise ExceptionGroup("startup", [ValueError("secret1")])
    except ExceptionGroup:
        text = traceback.format_exc()
    line = JsonFormatter().format(_record(text))
    assert "secret1" not in line and json.loads(line)["msg"].endswith("(traceback withheld)")
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "sealed entries", None, None)
    assert json.loads(JsonFormatter().format(plain))["msg"] == "sealed entries"


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, message, None, None)
