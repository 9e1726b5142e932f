"""Prometheus metrics (a key with `metrics:read`). The public probes are in app.routers.probes."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.driver import DatabaseDep
from app.core.errors import problem_responses
from app.core.read_replica import ReadReplica
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
REPLICA_LAG = Gauge(
    "consent_read_replica_lag_seconds",
    "Replay lag of the read replica (0: caught up or none; NaN: it does not answer)",
)
REPLICA_IN_USE = Gauge(
    "consent_read_replica_in_use",
    "1: reads that may lag go to the read replica; 0: to the primary (none, down or lagging)",
)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 403)},
)
async def metrics(
    request: Request,
    session: SessionDep,
    db: DatabaseDep,
    _: Annotated[Principal, Depends(require("metrics:read"))],
) -> Response:
    """Prometheus metrics: request counts and latency by route template; from the database
    (the same for every worker and the sync processes): refused sync calls per target,
    failed webhook deliveries per endpoint, the audit sealer's and the feed sequencer's
    backlogs; per worker: the gate's clock's passed moments not yet fed (as its last run
    saw them), each background task's last success, the read replica's replay lag as the
    worker's reads last measured it (at most 1 s old)."""
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
    await _replica_gauges(request.app.state.read_replica)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _replica_gauges(replica: ReadReplica | None) -> None:
    """As the worker's reads see the replica (its last measurement, at most a second old)."""
    if replica is None:
        REPLICA_LAG.set(0)
        REPLICA_IN_USE.set(0)
        return
    status = await replica.status()
    REPLICA_LAG.set(float("nan") if status.lag_seconds is None else status.lag_seconds)
    REPLICA_IN_USE.set(1 if status.usable else 0)
