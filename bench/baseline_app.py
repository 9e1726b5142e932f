"""The yardstick: a bare FastAPI + asyncpg app on the same PostgreSQL as consent-api.

    GET  /items/{id}  one indexed SELECT by key on a 100k-row table (a copy of the subjects)
    POST /items       one INSERT of a uuid, a jsonb and three indexed columns
    GET  /const       a constant answer, no database (the yardstick of GET /healthz)
    POST /same-sql/decisions       consent-api's own decision statement, nothing around it
    POST /same-sql/consent-events  consent-api's own consent-event statement, likewise

It gets what any careful asyncpg app would have and nothing consent-specific: a pool opened
at start-up and sized like consent-api's (same `BENCH_POOL_SIZE`), no reset round trip on
release, `gc.freeze()` after start-up. Connection parameters come from `BENCH_PG` (JSON).

The same-SQL endpoints are the physical limit of consent-api's design on this machine: the
statements are imported from the service (never copied, so they cannot drift) and run on a
second pool opened with the service's own options (`app.core.driver.pool_options`: size,
statement cache, `plan_cache_mode`, timeouts) from the same `CONSENT_*` environment. What
consent-api loses against them is the cost of everything in front of PostgreSQL.
"""

import gc
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException

from app.core.auth import Principal
from app.core.config import get_settings
from app.core.driver import pool_options
from app.models.consent import Evidence
from app.services.consent.events import _write_params
from app.services.consent.statements import LOOKUP_AND_WRITE
from app.services.gate.decisions import DECIDE_STATEMENT


async def _no_reset(_: asyncpg.Connection) -> None:
    return None


async def _bench_principal(pool: asyncpg.Pool) -> Principal:
    """The API key the benchmark drives consent-api with: the rows the same-SQL endpoints
    store name the same requester (an audit entry references the key)."""
    row = await pool.fetchrow(
        "SELECT id, name, role FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at"
    )
    assert row is not None, "the bench seeds an API key before starting this app"
    return Principal(key_id=row["id"], name=row["name"], role=row["role"], scopes=frozenset())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
    app.state.pool = await asyncpg.create_pool(
        **json.loads(os.environ["BENCH_PG"]), min_size=size, max_size=size, reset=_no_reset
    )
    settings = get_settings()
    assert settings.database_url, "the bench passes CONSENT_DATABASE_URL"
    app.state.grace_days = settings.retention_prospect_grace_days
    app.state.service_pool = await asyncpg.create_pool(
        **pool_options(settings.database_url, settings)
    )
    app.state.principal = await _bench_principal(app.state.service_pool)
    gc.collect()
    gc.freeze()
    yield
    await app.state.service_pool.close()
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/const")
async def const() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def get_item(item_id: uuid.UUID) -> dict[str, Any]:
    row = await app.state.pool.fetchrow(
        "SELECT id, email, name, company, category, source, created_at"
        " FROM baseline_subjects WHERE id = $1",
        item_id,
    )
    if row is None:
        raise HTTPException(404)
    return dict(row)


@app.post("/items", status_code=201)
async def create_item(body: dict[str, Any]) -> dict[str, Any]:
    item_id = uuid.uuid4()
    await app.state.pool.execute(
        "INSERT INTO baseline_events (id, body, subject_id, purpose, at)"
        " VALUES ($1, $2::jsonb, $3, $4, $5)",
        item_id,
        json.dumps(body),
        uuid.UUID(str(body["subject_id"])),
        str(body["purpose"]),
        datetime.now(UTC),
    )
    return {"id": item_id}


@app.post("/same-sql/decisions")
async def same_sql_decision(body: dict[str, Any]) -> dict[str, Any]:
    """DECIDE_AND_STORE for one subject id, as `POST /v1/decisions` sends it (autocommit)."""
    principal: Principal = app.state.principal
    async with app.state.service_pool.acquire() as con:
        rows = await DECIDE_STATEMENT.fetch(
            con,
            ids=[uuid.UUID(str(body["subject_id"]))],
            emails=[None],
            purpose=str(body["purpose"]),
            recipient=None,
            now=datetime.now(UTC),
            grace_days=app.state.grace_days,
            key_id=principal.key_id,
            key_name=principal.name,
            key_role=principal.role,
        )
    return dict(rows[0])


@app.post("/same-sql/consent-events", status_code=201)
async def same_sql_consent_event(body: dict[str, Any]) -> dict[str, Any]:
    """LOOKUP_AND_WRITE with the parameters the service builds for a known subject id."""
    subject_id = uuid.UUID(str(body["subject_id"]))
    params = _write_params(
        app.state.principal,
        subject_id,
        purpose=str(body["purpose"]),
        recipient=None,
        action=str(body["action"]),
        method=str(body["method"]),
        policy=body.get("policy_version"),
        notice_text=body.get("notice_text"),
        evidence=Evidence(**body.get("evidence") or {}),
        occurred_at=datetime.now(UTC),
    )
    async with app.state.service_pool.acquire() as con:
        row = await LOOKUP_AND_WRITE.fetchrow(con, sid=subject_id, email=None, **params)
    if row is None or row["id"] is None:
        raise HTTPException(404)
    return {"id": row["id"], "action": row["action"]}
