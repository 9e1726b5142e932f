"""The change feed for sync clients (sync, auditor)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.pagination import Limit
from app.models.change import ChangePage
from app.services.changes import feed as changes

router = APIRouter(prefix="/v1/changes", tags=["sync"])
Reader = Annotated[Principal, Depends(require("changes:read"))]


@router.get("", response_model=ChangePage, responses=problem_responses(401, 403, 422))
async def list_changes(
    session: SessionDep,
    _: Reader,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Last seq seen; 0 reads from the start")
    ] = 0,
    limit: Limit = 100,
) -> ChangePage:
    """Changes after `after`, in sequence order; never skips a late commit."""
    return await changes.read(session, after=after, limit=limit)
