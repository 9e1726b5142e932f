"""Processing decisions (crm, website, sync). A deny is a 200 answer, not an error."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import Forbidden, problem_responses
from app.core.idempotency import idempotent
from app.models.decision import (
    BatchDecisionPublic,
    BatchDecisionRequest,
    DecisionPublic,
    DecisionRequest,
)
from app.services import decisions

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])
Asker = Annotated[Principal, Depends(require("decisions:ask"))]
ERRORS = problem_responses(401, 403, 413, 422)


@router.post("", response_model=DecisionPublic, responses=ERRORS)
async def create_decision(
    body: DecisionRequest, request: Request, session: SessionDep, principal: Asker
) -> JSONResponse:
    """Decide whether processing a subject's data for a purpose is lawful, and why."""
    subject = body.subject_id if body.subject_id is not None else body.email
    assert subject is not None  # the model requires one of them

    async def create() -> tuple[int, Any]:
        return 200, await decisions.decide(
            session, principal, subject=subject, purpose=body.purpose, recipient=body.recipient
        )

    return await idempotent(session, principal, request, body, create)


@router.post("/batch", response_model=BatchDecisionPublic, responses=ERRORS)
async def create_decision_batch(
    body: BatchDecisionRequest, request: Request, session: SessionDep, principal: Asker
) -> JSONResponse:
    """The same decision for up to 1000 subjects (ids or e-mails), in request order.

    The website role may batch subject ids only: a batch of e-mails would tell it which of
    1000 addresses are known subjects (`subject_unknown` or not). It asks about one e-mail
    at a time with `POST /v1/decisions` (see SECURITY.md)."""
    if principal.role == "website" and any(not isinstance(s, UUID) for s in body.subjects):
        raise Forbidden(
            "The website role may batch subject ids only; ask about an e-mail with "
            "POST /v1/decisions."
        )

    async def create() -> tuple[int, Any]:
        items = await decisions.decide_batch(
            session,
            principal,
            subjects=body.subjects,
            purpose=body.purpose,
            recipient=body.recipient,
        )
        return 200, BatchDecisionPublic(purpose=body.purpose, recipient=body.recipient, items=items)

    return await idempotent(session, principal, request, body, create)
