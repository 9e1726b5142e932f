"""Two stateless replicas: two `consent-api serve` processes on one database both serve, and
the audit sealer runs in one of them at a time (transaction-level advisory lock), so the
chain written through both stays one gapless, duplicate-free, verifiable chain."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from joserfc.jwk import ECKey
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.db import ensure_database
from app.services.audit.chain import SEAL_LOCK
from tests.test_cli import _free_port, _start_serve

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "app.cli"]


@pytest.fixture
async def shared_database(database_url: str) -> str:
    name = f"consent_repl_{uuid.uuid4().hex[:10]}"
    await ensure_database(database_url, name)
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, url)
    return url


def _key(env: dict[str, str], role: str) -> dict[str, str]:
    out = subprocess.run(
        [*CLI, "keys", "create", "--role", role, "--name", f"{role}-{uuid.uuid4().hex[:6]}"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}


async def _connect(url: str) -> asyncpg.Connection:
    u = make_url(url)
    return await asyncpg.connect(
        user=u.username or "postgres",
        password=u.password or None,
        host=u.query.get("host") or u.host,
        port=u.port,
        database=u.database,
        statement_cache_size=0,
    )


@pytest.mark.replicas
async def test_two_serve_processes_share_one_database_and_one_sealer(shared_database, tmp_path):
    pem = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(
        CONSENT_DATABASE_URL=shared_database,
        CONSENT_DATA_DIR=str(tmp_path / "data"),
        CONSENT_SIGNING_KEY_PEM=pem,  # replicas share the signing key, as in production
    )
    if os.environ.get("CONSENT_DB_PREPARED_STATEMENTS"):
        env["CONSENT_DB_PREPARED_STATEMENTS"] = os.environ["CONSENT_DB_PREPARED_STATEMENTS"]
    crm, auditor = _key(env, "crm"), _key(env, "auditor")
    ports = [_free_port(), _free_port()]
    procs = [_start_serve(env, port) for port in ports]
    db = await _connect(shared_database)
    try:
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        async with httpx.AsyncClient(timeout=30) as client:
            # While the test holds the sealer's lock, neither replica seals.
            holder = await _connect(shared_database)
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT pg_advisory_xact_lock($1)", SEAL_LOCK)
            ids = []
            for i in range(6):
                r = await client.post(
                    f"{bases[i % 2]}/v1/subjects",
                    json={"email": f"r{i}-{uuid.uuid4().hex[:6]}@example.com",
                          "category": "prospect", "source": "event"},
                    headers=crm,
                )  # fmt: skip
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            await asyncio.sleep(2)  # four sealing rounds of each replica
            unsealed = "SELECT count(*) FROM audit_entries WHERE position IS NULL"
            assert await db.fetchval(unsealed) == 6
            await tx.rollback()
            await holder.close()

            # Both serve what either wrote; writes race through both while both sealers run.
            for i, sid in enumerate(ids):
                r = await client.get(f"{bases[(i + 1) % 2]}/v1/subjects/{sid}", headers=crm)
                assert r.status_code == 200
            writes = [
                client.post(
                    f"{bases[i % 2]}/v1/subjects",
                    json={
                        "email": f"w{i}-{uuid.uuid4().hex[:6]}@example.com",
                        "category": "prospect",
                        "source": "event",
                    },
                    headers=crm,
                )
                for i in range(40)
            ]
            assert {r.status_code for r in await asyncio.gather(*writes)} == {201}
            deadline = time.monotonic() + 30
            while await db.fetchval(unsealed) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.3)
            assert await db.fetchval(unsealed) == 0

            total = await db.fetchval("SELECT count(*) FROM audit_entries")
            positions = [r[0] for r in await db.fetch(
                "SELECT position FROM audit_entries ORDER BY position"
            )]  # fmt: skip
            assert positions == list(range(1, total + 1))  # one chain: no gap, no duplicate
            for base in bases:
                verified = (await client.get(f"{base}/v1/audit/verify", headers=auditor)).json()
                assert verified["ok"] is True and verified["checked"] == total, verified
    finally:
        await db.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
