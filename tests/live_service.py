"""The real service over HTTP: `consent-api serve` in a subprocess against a database of
its own (for fuzzing and fault tests, whose writes must not leak into other tests)."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.services.access import api_keys
from tests.pg_server import free_port


def admin_url_of(database_url: str) -> str:
    return make_url(database_url).set(database="postgres").render_as_string(hide_password=False)


async def raw_connection(url: str) -> asyncpg.Connection:
    """A plain asyncpg connection for a test's own checks, without a statement cache: the
    suite also runs through PgBouncer in transaction mode, where a named prepared statement
    made on one server connection is gone on the next."""
    from app.core.driver import connect_kwargs

    return await asyncpg.connect(**connect_kwargs(url), statement_cache_size=0)


async def fresh_database(admin_url: str, prefix: str = "consent_live") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await ensure_database(admin_url, name)
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, rendered)
    return rendered


async def make_keys(database_url: str, roles: list[str]) -> dict[str, dict[str, str]]:
    engine = create_engine(database_url, Settings())
    try:
        async with create_sessionmaker(engine)() as session:
            keys = {
                role: await api_keys.create_key(
                    session, name=f"{role}-{uuid.uuid4().hex[:6]}", role=role
                )
                for role in roles
            }
            await session.commit()
    finally:
        await engine.dispose()
    return {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}


@contextlib.contextmanager
def running_service(
    database_url: str, data_dir: Path, workers: str = "1", **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve on a free port; yields (base URL, process); stops it afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    # Behind the suite's PgBouncer run (tests/test_pgbouncer.py) the service must not use
    # named prepared statements either.
    if os.environ.get("CONSENT_DB_PREPARED_STATEMENTS"):
        env["CONSENT_DB_PREPARED_STATEMENTS"] = os.environ["CONSENT_DB_PREPARED_STATEMENTS"]
    env.update(
        CONSENT_DATABASE_URL=database_url,
        CONSENT_DATA_DIR=str(data_dir),
        CONSENT_LOG_LEVEL="WARNING",
        **{f"CONSENT_{k.upper()}": v for k, v in settings.items()},
    )
    log = (data_dir / f"service-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", workers],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start: see " + log.name)
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
