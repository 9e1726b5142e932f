"""Liveness and readiness: public (no API key), so that orchestrators can probe them.

Included without the authentication default (app.main); nothing here reads personal data.
The answers are constant bytes: probes are called often and validate nothing.
"""

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from app.core.driver import JSON, DatabaseDep
from app.core.errors import ServiceUnavailable, problem_responses
from app.services import health

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str = Field(description="ok (liveness); ready, or degraded with a reason")
    reason: str | None = Field(default=None, description="degraded only: what is wrong")


HEALTHY = b'{"status":"ok"}'
READY = b'{"status":"ready"}'


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process is up."""
    return Response(HEALTHY, media_type=JSON)


@router.get("/readyz", response_model=Health, responses=problem_responses(503))
async def readyz(request: Request, db: DatabaseDep) -> Response:
    """The database answers, promptly: ready (200). Still 200 but `degraded`, with the
    reason, when the audit chain has not been sealed for longer than
    `CONSENT_SEAL_STALL_SECONDS`, or when the read replica does not answer or lags more than
    `CONSENT_READ_MAX_LAG_SECONDS` (its reads go to the primary): requests are served, an
    operator must look."""
    settings = request.app.state.settings
    lag = await health.seal_lag(db, settings.readyz_timeout_seconds)
    if lag is None:
        raise ServiceUnavailable("The database does not answer.")
    reasons = []
    if lag > settings.seal_stall_seconds:
        reasons.append(f"the audit chain has not been sealed for {int(lag)} s")
    replica = request.app.state.read_replica
    if replica is not None and (replica_reason := (await replica.status()).reason):
        reasons.append(replica_reason)
    if reasons:
        body = {"status": "degraded", "reason": "; ".join(reasons)}
        return Response(orjson.dumps(body), media_type=JSON)
    return Response(READY, media_type=JSON)
