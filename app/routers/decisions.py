"""Processing decisions (crm, website, sync). A deny is a 200 answer, not an error."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
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
    """The same decision for up to 1000 subjects (ids or e-mails), in request order."""

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
