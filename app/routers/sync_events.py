"""What MailChimp reported about subjects (crm, auditor): unsubscribes, cleaned addresses,
addresses changed in MailChimp for the CRM to review."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.pagination import Cursor, Limit, Page
from app.models.sync import MailchimpEventPublic, MailchimpEventType
from app.services.sync import mailchimp_events

router = APIRouter(prefix="/v1/sync", tags=["sync"])
Reader = Annotated[Principal, Depends(require("subjects:read"))]


@router.get(
    "/mailchimp-events",
    response_model=Page[MailchimpEventPublic],
    responses=problem_responses(401, 403, 422),
)
async def list_mailchimp_events(
    session: SessionDep,
    _: Reader,
    subject_id: uuid.UUID | None = None,
    type: Annotated[MailchimpEventType | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[MailchimpEventPublic]:
    """Events MailChimp's webhook delivered, oldest first."""
    return await mailchimp_events.list_events(
        session, subject_id=subject_id, type_=type, limit=limit, cursor=cursor
    )
