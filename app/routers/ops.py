"""Liveness, readiness and Prometheus metrics."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app.core.auth import Principal, require
from app.core.errors import ServiceUnavailable, problem_responses
from app.services import health

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=problem_responses(503))
async def readyz(request: Request) -> Health:
    """The database answers."""
    settings = request.app.state.settings
    if not await health.database_ready(request.app.state.engine, settings.readyz_timeout_seconds):
        raise ServiceUnavailable("The database does not answer.")
    return Health(status="ready")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 403)},
)
async def metrics(_: Annotated[Principal, Depends(require("metrics:read"))]) -> Response:
    """Prometheus metrics: request counts and latency by route template."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
