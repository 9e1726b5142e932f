"""Calls MailChimp or SurveyMonkey refused (sync, auditor, admin): what waits for its next
try, and what was given up and why. Members are named by the keyed hash of the address."""

from typing import Annotated

from fastapi import APIRouter, Depends

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.pagination import Cursor, Limit, Page
from app.models.sync import SyncFailurePublic
from app.services.sync import outbox

router = APIRouter(prefix="/v1/sync", tags=["sync"])
Reader = Annotated[Principal, Depends(require("sync:read"))]


@router.get(
    "/failures",
    response_model=Page[SyncFailurePublic],
    responses=problem_responses(401, 403, 422),
)
async def list_sync_failures(
    session: SessionDep,
    _: Reader,
    target: str | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[SyncFailurePublic]:
    """Refused calls not done: a removal waits until it is done (tried again with back-off
    on every pass); an addition may be given up when the tool says it never will succeed."""
    return await outbox.failures(session, target=target, limit=limit, cursor=cursor)
