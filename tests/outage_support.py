"""The app as `consent-api serve` builds it, in process, for fault tests that point it at a
database they break: the asyncpg pool of the hot paths and the engine of the cold ones."""

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from app.core.config import Settings
from app.core.db import create_engine
from app.core.driver import Database, pool_options
from app.main import create_app
from tests.live_service import raw_connection
from tests.test_consent import give

NOT_STORED = "nothing was stored"
MAYBE_STORED = "a write may have been stored"
RETRY_AFTER = 3


def fault_settings(base: Settings, **overrides: Any) -> Settings:
    """Short bounded waits, so that each fault is met within a second or two; the key
    lookup cached, so that a warmed app meets the fault on the write itself."""
    values = {
        **base.model_dump(),
        "auth_cache_seconds": 60,
        "db_pool_size": 2,
        "db_connect_timeout_seconds": 1.0,
        "db_command_timeout_seconds": 2.0,
        "db_pool_timeout_seconds": 0.5,
        "retry_after_seconds": RETRY_AFTER,
    }
    return Settings(**{**values, **overrides})


@asynccontextmanager
async def serving(
    url: str, settings: Settings, *, lazy: bool = False
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app for `url` (no background tasks), over HTTP in process. `lazy`: the pool
    connects on first use, for a database that was never reachable (the service itself
    would wait for it at start-up, app.core.database_wait, and never serve a request)."""
    engine = create_engine(url, settings)
    app = create_app(settings, engine=engine)
    if lazy:
        options = {**pool_options(url, settings), "min_size": 0}
        pool = await asyncpg.create_pool(**options)
        database = Database(pool=pool, acquire_timeout=settings.db_pool_timeout_seconds)
    else:
        database = await Database.open(url, settings)
    app.state.database = database
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, app
    finally:
        assert database.pool is not None
        database.pool.terminate()  # no goodbye to a server that may be gone
        await engine.dispose()


def consent_body(subject_id: str, tag: str) -> dict[str, Any]:
    evidence = {"form_id": tag, "page_url": "https://e.x/", "user_agent": "faults"}
    return give(subject_id, evidence=evidence)


async def write(client: httpx.AsyncClient, crm: dict[str, str], subject_id: str, tag: str):
    """A consent event carrying `tag` as its form id and as its Idempotency-Key."""
    headers = {**crm, "Idempotency-Key": tag}
    return await client.post(
        "/v1/consent-events", json=consent_body(subject_id, tag), headers=headers
    )


def new_tag() -> str:
    return uuid.uuid4().hex


async def stored(url: str, tag: str) -> int:
    conn = await raw_connection(url)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM consent_events WHERE form_id = $1", tag)
        )
    finally:
        await conn.close()


def assert_503(r: httpx.Response, outcome: str) -> dict[str, Any]:
    """A 503 problem with Retry-After that says what became of the write, and nothing of
    the database's own words (no SQL, no traceback)."""
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == str(RETRY_AFTER)
    body: dict[str, Any] = r.json()
    assert body["type"] == "urn:consent-api:problem:unavailable"
    assert body["write_outcome"] == outcome, body
    if outcome == "not_stored":
        assert NOT_STORED in body["detail"] and MAYBE_STORED not in body["detail"]
    else:
        assert MAYBE_STORED in body["detail"] and NOT_STORED not in body["detail"]
        assert "with the same Idempotency-Key is safe" in body["detail"]
    assert "Idempotency-Key" in body["detail"]
    for leak in ("Traceback", "INSERT", "SELECT", "consent_events", "Errno"):
        assert leak not in r.text
    return body


def outages_logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, list[str]]]:
    """(kind, exception types along the chain) of each "database unavailable" log line."""
    return [
        (record.outage, record.error_types)
        for record in caplog.records
        if record.levelno >= logging.WARNING and hasattr(record, "outage")
    ]


def logged_kind(caplog: pytest.LogCaptureFixture, type_suffix: str) -> str:
    """The outage kind logged for the request whose chain held `type_suffix`."""
    for kind, types in outages_logged(caplog):
        if any(t.endswith(type_suffix) for t in types):
            return kind
    raise AssertionError(f"no outage with {type_suffix} logged: {outages_logged(caplog)}")
