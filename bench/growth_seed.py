"""Seeding `python -m bench.growth`'s database the way production fills one: subjects with
bases and consents through the bulk import (`consent-api import subjects`), then stored
decisions through the gate's batch statement (DECIDE_MANY_AND_STORE, 1,000 a statement, one
audit entry each), as CRM batches would leave them."""

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from app.core.driver import SERVER_SETTINGS
from app.services.gate.decisions import DECIDE_MANY_STATEMENT
from bench import import_subjects
from bench.cases import PURPOSES
from bench.seed import BASELINE_SQL, SECRET

BATCH = 1000
WRITERS = 2  # concurrent batch statements: one per core of the machine it was written on


def import_file(url: str, rows: int, tmp: Path, app_root: Path) -> dict[str, Any]:
    """Writes `rows` subjects (two bases and two consent events each) to an NDJSON file and
    imports it with the service's own command; the seconds it took and its report line."""
    path = tmp / "subjects.ndjson"
    with path.open("w") as f:
        for i in range(rows):
            f.write(json.dumps(import_subjects.row(i, plain=False)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(
        CONSENT_DATABASE_URL=url,
        CONSENT_SECRET_KEY=SECRET,  # the servers hash e-mails with the same key
        CONSENT_DATA_DIR=str(tmp / "data"),
        PYTHONPATH=str(app_root),
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "import", "subjects", str(path)],
        cwd=app_root, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.monotonic() - started
    path.unlink()
    if done.returncode:
        sys.exit(f"bench.growth: the import failed:\n{done.stderr[-2000:]}")
    return {"seconds": round(seconds, 1), "report": done.stdout.strip().splitlines()[-1]}


async def _writer(pool: asyncpg.Pool, ids: list[uuid.UUID], n: int, gate: dict) -> None:
    async with pool.acquire() as con:
        for i in range(n):
            subjects = random.sample(ids, min(BATCH, len(ids)))
            await DECIDE_MANY_STATEMENT.fetch(
                con, ids=subjects, emails=[None] * len(subjects),
                purpose=PURPOSES[i % len(PURPOSES)], now=datetime.now(UTC), **gate,
            )  # fmt: skip


async def store_decisions(
    connect: dict[str, Any], ids: list[str], decisions: int, principal: dict[str, Any]
) -> dict[str, Any]:
    """`decisions` stored decisions (rounded up to whole batches) on random subjects."""
    if decisions <= 0:
        return {"decisions": 0, "seconds": 0.0}
    keys = [uuid.UUID(i) for i in ids]
    batches = -(-decisions // BATCH)
    gate = {"recipient": None, "grace_days": 0, **principal}
    pool = await asyncpg.create_pool(
        **connect, min_size=WRITERS, max_size=WRITERS, server_settings=SERVER_SETTINGS
    )
    started = time.monotonic()
    try:
        shares = [batches // WRITERS + (w < batches % WRITERS) for w in range(WRITERS)]
        await asyncio.gather(*(_writer(pool, keys, n, gate) for n in shares))
    finally:
        await pool.close()
    seconds = time.monotonic() - started
    return {"decisions": batches * BATCH, "seconds": round(seconds, 1)}


async def principal_and_ids(connect: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The bench's API key as the gate's requester parameters, and every subject id."""
    con = await asyncpg.connect(**connect)
    try:
        key = await con.fetchrow("SELECT id, name, role FROM api_keys ORDER BY created_at")
        ids = [str(r[0]) for r in await con.fetch("SELECT id FROM subjects ORDER BY id")]
    finally:
        await con.close()
    return {"key_id": key["id"], "key_name": key["name"], "key_role": key["role"]}, ids


async def baseline_tables(connect: dict[str, Any]) -> None:
    con = await asyncpg.connect(**connect)
    try:
        for statement in BASELINE_SQL:
            await con.execute(statement)
    finally:
        await con.close()


async def vacuum_analyze(connect: dict[str, Any]) -> float:
    """As the main benchmark's seed ends: the servers start on settled tables."""
    con = await asyncpg.connect(**connect)
    started = time.monotonic()
    try:
        await con.execute("VACUUM ANALYZE")
    finally:
        await con.close()
    return round(time.monotonic() - started, 1)


async def sizes(connect: dict[str, Any]) -> list[dict[str, Any]]:
    """Every table of the bench database over 1 MB: rows (estimated), table and index bytes."""
    con = await asyncpg.connect(**connect)
    try:
        rows = await con.fetch(
            """SELECT c.relname AS table, c.reltuples::bigint AS rows,
                 pg_total_relation_size(c.oid) AS total_bytes,
                 pg_indexes_size(c.oid) AS index_bytes
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public'
                 AND pg_total_relation_size(c.oid) > 1048576
               ORDER BY pg_total_relation_size(c.oid) DESC"""
        )
    finally:
        await con.close()
    return [dict(r) for r in rows]
