"""`Idempotency-Key` for POSTs that create something.

The first request with a key inserts a row (a unique key, not check-then-insert) in the
same transaction as its write, and stores its answer before committing. A concurrent
duplicate blocks on that row's unique index until the first commits, then replays the
stored answer; had the first rolled back, the duplicate proceeds as the first. The same key
with another body is a 422. Keys are kept 24 hours; an older key may be used afresh.
"""

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.driver import JSON, Conn, Database, UnitOfWork, dumps, json_response, prepare
from app.core.errors import Unprocessable

HEADER = "idempotency-key"
REPLAYED = {"Idempotent-Replayed": "true"}
CLAIM_SQL = (
    "INSERT INTO idempotency_keys (owner_key_id, key, fingerprint, created_at)"
    " VALUES (:owner, :key, :fp, now())"
    " ON CONFLICT (owner_key_id, key) DO UPDATE"
    "   SET fingerprint = EXCLUDED.fingerprint, status_code = NULL, body = NULL,"
    "       created_at = now()"
    "   WHERE idempotency_keys.created_at < now() - interval '24 hours'"
    " RETURNING 1"
)
STORED_SQL = (
    "SELECT fingerprint, status_code, body FROM idempotency_keys"
    " WHERE owner_key_id = :owner AND key = :key"
)
COMPLETE_SQL = (
    "UPDATE idempotency_keys SET status_code = :status, body = CAST(:body AS jsonb)"
    " WHERE owner_key_id = :owner AND key = :key"
)
CLAIM, STORED, COMPLETE = text(CLAIM_SQL), text(STORED_SQL), text(COMPLETE_SQL)
# The same statements for hot paths on the driver connection (app.core.driver).
DRIVER_CLAIM, DRIVER_STORED, DRIVER_COMPLETE = (
    prepare(CLAIM_SQL),
    prepare(STORED_SQL),
    prepare(COMPLETE_SQL),
)


def fingerprint(request: Request, body: BaseModel, extra: str = "") -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    raw = f"{request.method} {request.url.path}\n{canonical}\n{extra}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _key_of(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is not None and not 1 <= len(key) <= 255:
        raise Unprocessable("`Idempotency-Key` must be 1 to 255 characters.")
    return key


def _same_request(stored: Any, fp: str) -> None:
    if stored.fingerprint != fp:
        raise Unprocessable("This Idempotency-Key was used with a different request.")


async def idempotent(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    body: BaseModel,
    create: Callable[[], Awaitable[tuple[int, Any]]],
    *,
    extra: str = "",
) -> JSONResponse:
    """Run `create` (returning status and payload) at most once per Idempotency-Key."""
    key = _key_of(request)
    if key is None:
        status, payload = await create()
        return JSONResponse(jsonable_encoder(payload), status_code=status)
    params = {"owner": principal.key_id, "key": key}
    fp = fingerprint(request, body, extra)
    claimed = (await session.execute(CLAIM, {**params, "fp": fp})).first()
    if claimed is None:
        stored = (await session.execute(STORED, params)).one()
        _same_request(stored, fp)
        return JSONResponse(stored.body, status_code=stored.status_code, headers=REPLAYED)
    status, payload = await create()
    encoded = jsonable_encoder(payload)
    await session.execute(COMPLETE, {**params, "status": status, "body": json.dumps(encoded)})
    return JSONResponse(encoded, status_code=status)


async def run_once(
    db: Database,
    principal: Principal,
    request: Request,
    body: BaseModel,
    create: Callable[[Conn], Awaitable[tuple[int, Any]]],
    *,
    unit: UnitOfWork,
    extra: str = "",
) -> Response:
    """`idempotent` for hot paths: `create(con)` returns status and a JSON-ready payload.

    Without an Idempotency-Key, `create` runs in the unit of work its service declared (one
    statement, or a transaction); with a key, key and write share one transaction."""
    key = _key_of(request)
    if key is None:
        async with db.unit(unit) as con:
            status, payload = await create(con)
        return json_response(payload, status)
    fp = fingerprint(request, body, extra)
    async with db.transaction() as con:
        if await DRIVER_CLAIM.fetchrow(con, owner=principal.key_id, key=key, fp=fp) is None:
            stored = await DRIVER_STORED.fetchrow(con, owner=principal.key_id, key=key)
            assert stored is not None  # the claim conflicted with this very row
            _same_request(stored, fp)
            # jsonb comes as text from the app's pool, decoded on SQLAlchemy's connections.
            replay = stored.body if isinstance(stored.body, str) else dumps(stored.body)
            return Response(replay, stored.status_code, REPLAYED, JSON)
        status, payload = await create(con)
        encoded = dumps(payload)
        await DRIVER_COMPLETE.execute(
            con, owner=principal.key_id, key=key, status=status, body=encoded.decode()
        )
    return json_response(encoded, status)


async def purge_expired(session: AsyncSession) -> int:
    """Forget keys past their 24 hours: their stored replies may echo personal data."""
    result = await session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
    )
    return int(getattr(result, "rowcount", 0) or 0)
