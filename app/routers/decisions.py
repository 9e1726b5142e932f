"""Processing decisions (crm, website, sync). A deny is a 200 answer, not an error."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response

from app.core.auth import Principal, require
from app.core.driver import Conn, DatabaseDep
from app.core.errors import Forbidden, problem_responses
from app.core.idempotency import run_once
from app.models.decision import (
    BatchDecisionPublic,
    BatchDecisionRequest,
    DecisionPublic,
    DecisionRequest,
)
from app.services.gate import decisions

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])
Asker = Annotated[Principal, Depends(require("decisions:ask"))]
ERRORS = problem_responses(401, 403, 413, 422)


@router.post("", response_model=DecisionPublic, responses=ERRORS)
async def create_decision(
    body: DecisionRequest, request: Request, db: DatabaseDep, principal: Asker
) -> Response:
    """Decide whether processing a subject's data for a purpose is lawful, and why."""
    subject = body.subject_id if body.subject_id is not None else body.email
    assert subject is not None  # the model requires one of them

    async def create(con: Conn) -> tuple[int, Any]:
        return 200, await decisions.decision_payload(
            con, principal, subject=subject, purpose=body.purpose, recipient=body.recipient
        )

    return await run_once(db, principal, request, body, create, unit=decisions.UNIT_OF_WORK)


@router.post("/batch", response_model=BatchDecisionPublic, responses=ERRORS)
async def create_decision_batch(
    body: BatchDecisionRequest, request: Request, db: DatabaseDep, principal: Asker
) -> Response:
    """The same decision for up to 1000 subjects (ids or e-mails), in request order.

    The website role may batch subject ids only: a batch of e-mails would tell it which of
    1000 addresses are known subjects (`subject_unknown` or not). It asks about one e-mail
    at a time with `POST /v1/decisions` (see SECURITY.md)."""
    if principal.role == "website" and any(not isinstance(s, UUID) for s in body.subjects):
        raise Forbidden(
            "The website role may batch subject ids only; ask about an e-mail with "
            "POST /v1/decisions."
        )

    async def create(con: Conn) -> tuple[int, Any]:
        return 200, await decisions.batch_payload(
            con,
            principal,
            subjects=body.subjects,
            purpose=body.purpose,
            recipient=body.recipient,
        )

    return await run_once(db, principal, request, body, create, unit=decisions.UNIT_OF_WORK)
