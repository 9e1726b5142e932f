"""Consent in bulk: the export of every event with its receipt, and the re-consent list
(crm, auditor)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.pagination import Cursor, Limit, Page
from app.models.catalogue import KEY_PATTERN
from app.models.consent import ReconsentItem
from app.services import reconsent

router = APIRouter(prefix="/v1", tags=["consent"])
Reader = Annotated[Principal, Depends(require("consent:read"))]
PurposeKey = Annotated[str | None, Query(max_length=63, pattern=KEY_PATTERN)]


@router.get(
    "/reports/reconsent",
    response_model=Page[ReconsentItem],
    responses=problem_responses(401, 403, 422),
)
async def reconsent_report(
    session: SessionDep,
    _: Reader,
    purpose: PurposeKey = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ReconsentItem]:
    """Who must be asked for consent again: live subjects whose consent for the purpose
    (all purposes when omitted) was given under a policy version older than one that
    names the purpose in `reconsent_purposes`. Decisions deny them `consent_outdated`."""
    return await reconsent.outdated_consents(session, purpose=purpose, limit=limit, cursor=cursor)
