"""Signed links to the person's own pages, for e-mails (crm, sync)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.models.link import LinkCreate, LinkPublic
from app.services.person import links as person_links

router = APIRouter(prefix="/v1", tags=["links"])
Issuer = Annotated[Principal, Depends(require("links:create"))]


@router.post(
    "/subjects/{subject_id}/links",
    response_model=LinkPublic,
    response_model_by_alias=True,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
)
async def create_subject_links(
    subject_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: Issuer,
    body: LinkCreate | None = None,
) -> LinkPublic:
    """Signed unsubscribe and preference-page URLs, and the two e-mail headers (RFC 8058)."""
    return await person_links.issue_links(
        session,
        principal,
        subject_id=subject_id,
        data=body or LinkCreate(),
        settings=request.app.state.settings,
    )
