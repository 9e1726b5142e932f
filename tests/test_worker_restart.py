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
import time
import traceback
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from app.core.observability import JsonFormatter
from tests.live_service import admin_url_of, fresh_database, raw_connection, running_service


def _workers_of(pid: int) -> set[int]:
    """The uvicorn workers (children running Python) of a `serve` process."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    }


async def _allow_connections(admin_url: str, database: str, allowed: bool) -> None:
    admin = await raw_connection(admin_url)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
    finally:
        await admin.close()


async def test_a_worker_restarted_while_the_database_refuses_waits_for_it(database_url, tmp_path):
    admin_url = admin_url_of(database_url)
    url = await fresh_database(admin_url, "consent_restart")
    database = make_url(url).database
    assert database
    with running_service(url, tmp_path, workers="2", db_pool_size="2") as (base, proc):
        workers = _workers_of(proc.pid)
        assert len(workers) == 2, workers
        await _allow_connections(admin_url, database, False)
        try:
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            # uvicorn notices within half a second and starts a replacement, which now
            # meets a database that refuses it for a few seconds.
            for _ in range(150):
                if _workers_of(proc.pid) - workers:
                    break
                await asyncio.sleep(0.2)
            assert _workers_of(proc.pid) - workers, "no replacement worker was started"
            await asyncio.sleep(4)
            assert proc.poll() is None, "the service stopped when its new worker met the outage"
        finally:
            await _allow_connections(admin_url, database, True)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                ready = await client.get("/readyz")
                if ready.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert ready.status_code == 200, ready.text
        replacement = _workers_of(proc.pid) - workers
        log = next(tmp_path.glob("service-*.log")).read_text()
        assert len(_workers_of(proc.pid)) == 2 and replacement and victim not in replacement, log
        assert proc.poll() is None
    log = next(tmp_path.glob("service-*.log")).read_text()
    waits = [json.loads(line) for line in log.splitlines() if "waiting for the database" in line]
    assert waits and {w["error_class"] for w in waits} == {"ObjectNotInPrerequisiteStateError"}
    deaths = [json.loads(line) for line in log.splitlines() if f"[{victim}] died" in line]
    assert [d["level"] for d in deaths] == ["warning"], log[-2000:]  # seen at level WARNING
    assert "Traceback" not in log and "startup failed" not in log, log[-2000:]


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
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, text, None, None)
    line = JsonFormatter().format(record)
    out = json.loads(line)
    assert out["error_class"] == "UniqueViolationError"
    assert out["msg"] == "unhandled exception (traceback withheld)"
    assert "ann@example.com" not in line and "File " not in line and "\\n" not in line
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "sealed entries", None, None)
    assert json.loads(JsonFormatter().format(plain))["msg"] == "sealed entries"
