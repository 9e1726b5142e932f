"""The yardstick: a bare FastAPI + asyncpg app on the same PostgreSQL as consent-api.

    GET  /items/{id}  one indexed SELECT by key on a 100k-row table (a copy of the subjects)
    POST /items       one INSERT of a uuid, a jsonb and three indexed columns
    GET  /const       a constant answer, no database (the yardstick of GET /healthz)

It gets what any careful asyncpg app would have and nothing consent-specific: a pool opened
at start-up and sized like consent-api's (same `BENCH_POOL_SIZE`), no reset round trip on
release, `gc.freeze()` after start-up. Connection parameters come from `BENCH_PG` (JSON).
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


async def _no_reset(_: asyncpg.Connection) -> None:
    return None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
    app.state.pool = await asyncpg.create_pool(
        **json.loads(os.environ["BENCH_PG"]), min_size=size, max_size=size, reset=_no_reset
    )
    gc.collect()
    gc.freeze()
    yield
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
