"""Accountability for auditors: the audit log, its signed checkpoints, verification and
stored decisions. The public signing keys (JWKS) are app.routers.keys (no API key)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from app.core.auth import Principal, require
from app.core.db import ReadSessionDep, SessionDep
from app.core.errors import problem_responses
from app.core.pagination import Cursor, Limit, Page
from app.core.signing import get_signer
from app.models.audit import AuditCheckpointPublic, AuditEntryPublic
from app.models.decision import DecisionPublic
from app.services.audit import chain as audit_chain
from app.services.audit import listing as audit_log

router = APIRouter(prefix="/v1", tags=["accountability"])
AuditReader = Annotated[Principal, Depends(require("audit:read"))]
DecisionReader = Annotated[Principal, Depends(require("decisions:read"))]
ERRORS = problem_responses(401, 403, 422)


class VerifyResult(BaseModel):
    ok: bool
    checked: int
    first_bad: int | None
    checkpoints_checked: int
    problem: str | None


@router.get("/audit/events", response_model=Page[AuditEntryPublic], responses=ERRORS)
async def list_audit_events(
    session: ReadSessionDep,
    _: AuditReader,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Entries with id greater than this")
    ] = 0,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AuditEntryPublic]:
    """Audit entries in append order; `position` and `hash` once sealed."""
    return await audit_log.list_events(session, after=after, limit=limit, cursor=cursor)


@router.get("/audit/checkpoints", response_model=Page[AuditCheckpointPublic], responses=ERRORS)
async def list_audit_checkpoints(
    session: ReadSessionDep, _: AuditReader, limit: Limit = 100, cursor: Cursor = None
) -> Page[AuditCheckpointPublic]:
    """Signed chain heads (compact JWS, ES256); keep them to prove the past later."""
    return await audit_log.list_checkpoints(session, limit=limit, cursor=cursor)


@router.get("/audit/verify", response_model=VerifyResult, responses=problem_responses(401, 403))
async def verify_audit_chain(request: Request, session: SessionDep, _: AuditReader) -> VerifyResult:
    """Seal what is pending, then recompute the chain and check every checkpoint.

    A full walk is heavy: one at a time per worker; a second caller meanwhile gets a 503
    with Retry-After rather than queueing (issue 14: 30 at once stalled every request)."""
    signer = get_signer(request.app.state.settings)
    result = await audit_chain.verify_one_at_a_time(session, signer)
    return VerifyResult(**result.__dict__)


@router.get("/decisions", response_model=Page[DecisionPublic], responses=ERRORS)
async def list_decisions(
    session: ReadSessionDep,
    _: DecisionReader,
    subject_id: uuid.UUID | None = None,
    purpose: Annotated[str | None, Query(max_length=63)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[DecisionPublic]:
    """Stored decisions, newest first: the proof of accountability (Art 5(2))."""
    return await audit_log.list_decisions(
        session, subject_id=subject_id, purpose=purpose, limit=limit, cursor=cursor
    )
