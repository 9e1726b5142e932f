"""Prometheus metrics (a key with `metrics:read`). The public probes are in app.routers.probes."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.services.sync import outbox

router = APIRouter(tags=["operations"])
SYNC_FAILURES = Gauge(
    "consent_sync_failures", "Refused sync calls not done (waiting or given up)", ["target"]
)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 403)},
)
async def metrics(
    session: SessionDep, _: Annotated[Principal, Depends(require("metrics:read"))]
) -> Response:
    """Prometheus metrics: request counts and latency by route template; refused sync
    calls per target (read from the database: the workers are processes of their own)."""
    SYNC_FAILURES.clear()
    for target, n in (await outbox.counts(session)).items():
        SYNC_FAILURES.labels(target=target).set(n)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
