"""Liveness and readiness: public (no API key), so that orchestrators can probe them.

Included without the authentication default (app.main); nothing here reads personal data.
The answers are constant bytes: probes are called often and validate nothing.
"""

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

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
async def readyz(request: Request, db: DatabaseDep) -> Response:
    """The database answers, promptly."""
    settings = request.app.state.settings
    if not await health.database_ready(db, settings.readyz_timeout_seconds):
        raise ServiceUnavailable("The database does not answer.")
    return Response(READY, media_type=JSON)
