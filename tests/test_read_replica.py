"""CONSENT_READ_DATABASE_URL on a real hot standby: listings and reports read from it while
writes (and the gate) stay on the primary. What a reader sees while it lags (replay paused:
the old data, and the lag in /metrics) and once it has caught up (the new data, lag 0); reads
that fall back to the primary, with one log line, when it lags past
CONSENT_READ_MAX_LAG_SECONDS or does not answer, and /readyz `degraded` (still 200) then.

The module starts a primary of its own (`tests/pg_server.py`, the embedded binaries or
CONSENT_TEST_PG_BIN's) and a standby made from it with `pg_basebackup -R`: the suite's own
server may be one this test cannot reconfigure or copy (CONSENT_TEST_ADMIN_URL, PgBouncer).
"""

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli import migrate
from app.core.config import Settings
from app.core.db import (
    DATABASE_NAME,
    create_engine,
    create_read_engine,
    create_sessionmaker,
    ensure_database,
)
from app.core.read_replica import CHECK_EVERY_SECONDS
from app.main import create_app
from app.services.access import api_keys
from tests.conftest import new_subject
from tests.pg_server import ScratchPostgres, embedded_bin_dir
from tests.pg_standby import ScratchStandby

REPLICA_LOG = "consent_api.read_replica"


@dataclass
class Pair:
    primary: ScratchPostgres
    standby: ScratchStandby
    primary_url: str
    standby_url: str


def _bin_dir() -> Path:
    # The PostgreSQL 15 pass of .ci/run names its binaries: the standby is tried on them too.
    return Path(os.environ.get("CONSENT_TEST_PG_BIN") or embedded_bin_dir())


def _url(server: ScratchPostgres) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{server.port}/{DATABASE_NAME}"


@pytest.fixture(scope="module")
async def pair() -> AsyncIterator[Pair]:
    """A migrated primary and its streaming hot standby (about 5 s to set up)."""
    bin_dir = _bin_dir()
    if not (bin_dir / "pg_basebackup").exists():
        pytest.skip(f"no pg_basebackup in {bin_dir}: cannot make a standby")
    primary = ScratchPostgres(bin_dir)
    standby = None
    try:
        primary.start()
        await ensure_database(primary.admin_url, DATABASE_NAME)
        await asyncio.to_thread(migrate, _url(primary))
        standby = ScratchStandby(primary)
        standby.start()
        yield Pair(primary, standby, _url(primary), _url(standby))
    finally:
        if standby is not None:
            standby.close()
        primary.close()


async def _admin(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url.replace("+asyncpg", ""), statement_cache_size=0)


async def _replayed(pair: Pair) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    p, s = await _admin(pair.primary_url), await _admin(pair.standby_url)
    try:
        target = await p.fetchval("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + 30
        while await s.fetchval("SELECT pg_last_wal_replay_lsn() < $1", target):
            assert time.monotonic() < deadline, "the standby did not catch up"
            await asyncio.sleep(0.05)
    finally:
        await p.close()
        await s.close()


@asynccontextmanager
async def replay_paused(pair: Pair) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Replay paused on the standby (WAL still received); yields `received()`, which waits
    until the standby has received what the primary wrote. Resumed, and caught up, after."""
    s = await _admin(pair.standby_url)
    try:
        await s.execute("SELECT pg_wal_replay_pause()")

        async def received() -> None:
            p = await _admin(pair.primary_url)
            target = await p.fetchval("SELECT pg_current_wal_lsn()")
            await p.close()
            behind = "SELECT coalesce(pg_last_wal_receive_lsn() < $1, true)"
            deadline = time.monotonic() + 30
            while await s.fetchval(behind, target):
                assert time.monotonic() < deadline, "the standby received nothing"
                await asyncio.sleep(0.05)

        yield received
    finally:
        await s.execute("SELECT pg_wal_replay_resume()")
        await s.close()
    await _replayed(pair)


@dataclass
class Service:
    client: httpx.AsyncClient
    crm: dict[str, str]
    auditor: dict[str, str]

    async def decisions(self, subject_id: str) -> list[dict[str, Any]]:
        r = await self.client.get(
            "/v1/decisions", params={"subject_id": subject_id}, headers=self.auditor
        )
        assert r.status_code == 200, r.text
        return r.json()["items"]

    async def decide(self, subject_id: str) -> None:
        body = {"subject_id": subject_id, "purpose": "surveys"}
        r = await self.client.post("/v1/decisions", json=body, headers=self.crm)
        assert r.status_code == 200, r.text

    async def readyz(self) -> dict[str, Any]:
        r = await self.client.get("/readyz")
        assert r.status_code == 200, r.text  # degraded or not, still 200
        return r.json()

    async def gauge(self, name: str) -> float:
        text = (await self.client.get("/metrics", headers=self.auditor)).text
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, name
        return float(found.group(1))


async def _keys(engine: AsyncEngine) -> tuple[dict[str, str], dict[str, str]]:
    """A crm and an auditor key, committed on the primary (the standby gets them too)."""
    async with create_sessionmaker(engine)() as session:
        keys = [await api_keys.create_key(session, name=f"{role}-replica", role=role)
                for role in ("crm", "auditor")]  # fmt: skip
        await session.commit()
    return {"Authorization": f"Bearer {keys[0]}"}, {"Authorization": f"Bearer {keys[1]}"}


@pytest.fixture(scope="module")
async def engines(pair: Pair, test_settings: Settings) -> AsyncIterator[dict[str, Any]]:
    primary = create_engine(pair.primary_url, test_settings)
    crm, auditor = await _keys(primary)
    try:
        yield {"primary": primary, "crm": crm, "auditor": auditor}
    finally:
        await primary.dispose()


@asynccontextmanager
async def service(
    pair: Pair, engines: dict[str, Any], test_settings: Settings, max_lag: float
) -> AsyncIterator[Service]:
    """The app on the primary, its reads that may lag on the standby; no test transaction,
    since a standby only sees what the primary committed."""
    settings = Settings(**{
        **test_settings.model_dump(),
        "database_url": pair.primary_url,
        "read_database_url": pair.standby_url,
        "read_max_lag_seconds": max_lag,
    })  # fmt: skip
    replica = create_read_engine(settings, engines["primary"])
    assert replica is not engines["primary"]
    app = create_app(settings, engine=engines["primary"], read_engine=replica)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield Service(c, engines["crm"], engines["auditor"])
    finally:
        await replica.dispose()


async def _new_subject(svc: Service) -> str:
    r = await svc.client.post("/v1/subjects", json=new_subject(), headers=svc.crm)
    assert r.status_code == 201, r.text
    return r.json()["id"]


LIMIT = 1.0  # CONSENT_READ_MAX_LAG_SECONDS in the test where the replica lags past it


def _measured_again() -> Awaitable[None]:
    # Each worker measures the replica at most once a second: let the last answer expire.
    return asyncio.sleep(CHECK_EVERY_SECONDS + 0.1)


async def test_a_lagging_replica_serves_old_data_then_new_once_caught_up(
    pair, engines, test_settings
):
    assert create_read_engine(test_settings, engines["primary"]) is engines["primary"]
    async with service(pair, engines, test_settings, max_lag=600) as svc:
        sid = await _new_subject(svc)
        await svc.decide(sid)
        await _replayed(pair)
        assert len(await svc.decisions(sid)) == 1  # read on the standby, caught up
        events = (await svc.client.get("/v1/audit/events", headers=svc.auditor)).json()["items"]
        last_event = events[-1]["id"]
        async with replay_paused(pair) as received:
            await svc.decide(sid)  # written on the primary, received but not replayed
            await received()
            await _measured_again()
            # The reader sees the old data; the service knows how far behind it is.
            assert len(await svc.decisions(sid)) == 1
            newer = await svc.client.get(
                "/v1/audit/events", params={"after": last_event}, headers=svc.auditor
            )
            assert newer.status_code == 200 and newer.json()["items"] == [], newer.text
            assert await svc.gauge("consent_read_replica_lag_seconds") >= CHECK_EVERY_SECONDS
            assert await svc.gauge("consent_read_replica_in_use") == 1
            assert await svc.readyz() == {"status": "ready"}  # within the limit
        await _measured_again()
        assert len(await svc.decisions(sid)) == 2  # caught up: the new data
        newer = await svc.client.get(
            "/v1/audit/events", params={"after": last_event}, headers=svc.auditor
        )
        assert len(newer.json()["items"]) >= 1
        assert await svc.gauge("consent_read_replica_lag_seconds") == 0
        assert await svc.readyz() == {"status": "ready"}


async def test_reads_go_to_the_primary_while_the_replica_lags_past_the_limit(
    pair, engines, test_settings, caplog
):
    caplog.set_level(logging.INFO, logger=REPLICA_LOG)
    async with service(pair, engines, test_settings, max_lag=LIMIT) as svc:
        sid = await _new_subject(svc)
        await _replayed(pair)
        assert await svc.decisions(sid) == []  # on the standby, within the limit
        async with replay_paused(pair) as received:
            await svc.decide(sid)
            await received()
            await _measured_again()  # the last replayed commit is now over a second old
            assert len(await svc.decisions(sid)) == 1  # fresh: read on the primary
            assert len(await svc.decisions(sid)) == 1
            ready = await svc.readyz()
            assert ready["status"] == "degraded" and "read replica lags" in ready["reason"]
            # Past the limit is what sends reads to the primary: the gauge and the log line
            # say the lag that decided it (a state the test arranged, not a timing).
            assert await svc.gauge("consent_read_replica_lag_seconds") > LIMIT
            assert await svc.gauge("consent_read_replica_in_use") == 0
        lines = [r for r in caplog.records if r.name == REPLICA_LOG]
        assert len(lines) == 1 and "reads go to the primary" in lines[0].getMessage()
        assert lines[0].levelno == logging.WARNING and lines[0].lag_seconds > LIMIT
        await _measured_again()
        assert await svc.readyz() == {"status": "ready"}
        assert "go to it" in caplog.records[-1].getMessage()  # one line back, too


async def test_reads_go_to_the_primary_while_the_replica_is_down(
    pair, engines, test_settings, caplog
):
    caplog.set_level(logging.INFO, logger=REPLICA_LOG)
    async with service(pair, engines, test_settings, max_lag=600) as svc:
        sid = await _new_subject(svc)
        await _replayed(pair)
        assert await svc.decisions(sid) == []  # the standby answers
        pair.standby.stop()
        try:
            await svc.decide(sid)
            await _measured_again()
            assert len(await svc.decisions(sid)) == 1  # served by the primary
            ready = await svc.readyz()
            assert ready["status"] == "degraded", ready
            assert ready["reason"] == "the read replica does not answer; reads go to the primary"
            assert math.isnan(await svc.gauge("consent_read_replica_lag_seconds"))
            assert await svc.gauge("consent_read_replica_in_use") == 0
        finally:
            pair.standby.start()
        lines = [r for r in caplog.records if r.name == REPLICA_LOG]
        assert len(lines) == 1 and lines[0].error_class, lines
        assert "@example.com" not in caplog.text  # no personal data
        await _replayed(pair)
        await _measured_again()
        assert len(await svc.decisions(sid)) == 1  # the standby again, caught up
        lines = [r for r in caplog.records if r.name == REPLICA_LOG]
        assert len(lines) == 2 and "go to it" in lines[1].getMessage()
        assert await svc.readyz() == {"status": "ready"}
        assert await svc.gauge("consent_read_replica_in_use") == 1
