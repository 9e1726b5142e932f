"""Liveness, readiness and Prometheus metrics."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app.core.auth import Principal, require
from app.core.driver import JSON, DatabaseDep
from app.core.errors import ServiceUnavailable, problem_responses
from app.services import health

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


HEALTHY = b'{"status":"ok"}'
READY = b'{"status":"ready"}'


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process is up."""
    return Response(HEALTHY, media_type=JSON)


@router.get("/readyz", response_model=Health, responses=problem_responses(503))
async def readyz(db: DatabaseDep) -> Response:
    """The database answers."""
    if not await health.database_ready(db):
        raise ServiceUnavailable("The database does not answer.")
    return Response(READY, media_type=JSON)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 403)},
)
async def metrics(_: Annotated[Principal, Depends(require("metrics:read"))]) -> Response:
    """Prometheus metrics: request counts and latency by route template."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
