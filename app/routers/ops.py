"""Prometheus metrics (a key with `metrics:read`). The public probes are in app.routers.probes."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.core.auth import Principal, require
from app.core.errors import problem_responses

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 403)},
)
async def metrics(_: Annotated[Principal, Depends(require("metrics:read"))]) -> Response:
    """Prometheus metrics: request counts and latency by route template."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
