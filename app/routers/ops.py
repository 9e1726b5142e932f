"""Prometheus metrics (a key with `metrics:read`). The public probes are in app.routers.probes."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.driver import DatabaseDep
from app.core.errors import problem_responses
from app.services import health
from app.services.sync import outbox
from app.services.webhooks import deliveries as webhook_deliveries

router = APIRouter(tags=["operations"])
SYNC_FAILURES = Gauge(
    "consent_sync_failures", "Refused sync calls not done (waiting or given up)", ["target"]
)
WEBHOOK_FAILURES = Gauge(
    "consent_webhook_failures",
    "Webhook deliveries given up after their retry window (failed; retry sends one again)",
    ["endpoint"],
)
UNSEALED = Gauge("consent_audit_unsealed_entries", "Audit entries not yet in the hash chain")
SEAL_LAG = Gauge(
    "consent_audit_seal_lag_seconds", "Age of the oldest unsealed audit entry (0: none)"
)
CHANGES_BACKLOG = Gauge(
    "consent_changes_backlog", "Change-feed entries committed but not yet given a position"
)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 403)},
)
async def metrics(
    session: SessionDep,
    db: DatabaseDep,
    _: Annotated[Principal, Depends(require("metrics:read"))],
) -> Response:
    """Prometheus metrics: request counts and latency by route template; from the database
    (the same for every worker and the sync processes): refused sync calls per target,
    failed webhook deliveries per endpoint, the audit sealer's and the feed sequencer's
    backlogs; per worker: the gate's clock's passed moments not yet fed (as its last run
    saw them), each background task's last success."""
    SYNC_FAILURES.clear()
    for target, n in (await outbox.counts(session)).items():
        SYNC_FAILURES.labels(target=target).set(n)
    WEBHOOK_FAILURES.clear()
    for endpoint, n in (await webhook_deliveries.failed_counts(session)).items():
        WEBHOOK_FAILURES.labels(endpoint=endpoint).set(n)
    backlog = await health.backlog(db)
    UNSEALED.set(backlog.unsealed)
    SEAL_LAG.set(backlog.seal_lag_seconds)
    CHANGES_BACKLOG.set(backlog.unsequenced)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
