"""Liveness and readiness: public (no API key), so that orchestrators can probe them.

Included without the authentication default (app.main); nothing here reads personal data.
"""

from fastapi import APIRouter, Request
from pydantic import BaseModel

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
    if not await health.database_ready(request.app.state.engine):
        raise ServiceUnavailable("The database does not answer.")
    return Health(status="ready")
