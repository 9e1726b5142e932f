"""Proof of consent (auditors, and the CRM that recorded it)."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.signing import get_signer
from app.services.consent.proof import consent_proof

router = APIRouter(prefix="/v1", tags=["accountability"])
Reader = Annotated[Principal, Depends(require("consent:read"))]


class ConsentProof(BaseModel):
    """Verifiable with GET /v1/keys alone; `verification.steps` says how."""

    model_config = ConfigDict(extra="allow")
    format: str
    subject_id: uuid.UUID
    purpose: str | None
    generated_at: str
    controller: dict[str, Any]
    verification: dict[str, Any]
    complete: bool = Field(
        description="Every event's audit entry is sealed and covered by a signed checkpoint"
    )
    decision_rows_match: bool = Field(
        description="Every audit entry here that records a statement storing many decisions "
        "(`decision.statement`) was recomputed from the stored decision rows and matches"
    )
    events: list[dict[str, Any]] = Field(
        description="event, receipt, receipt_jws (compact JWS, ES256), notice {sha256, text}, "
        "recorded_by_entry (chain position)"
    )
    audit_entries: list[dict[str, Any]] = Field(
        description="entry (exactly what the chain hashes), prev_hash, hash; from each "
        "recording entry up to its covering checkpoint"
    )
    checkpoints: list[dict[str, Any]]
    checkpoint: dict[str, Any] | None = Field(description="The latest covering checkpoint")


@router.get(
    "/subjects/{subject_id}/consent-proof",
    response_model=ConsentProof,
    responses=problem_responses(401, 403, 404, 422),
)
async def get_consent_proof(
    subject_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    _: Reader,
    purpose: Annotated[str | None, Query(max_length=63, description="Absent: all")] = None,
) -> JSONResponse:
    """The consent events, receipts, notices and sealed audit entries with their checkpoint."""
    settings = request.app.state.settings
    proof = await consent_proof(
        session, get_signer(settings), subject_id=subject_id, purpose=purpose
    )
    return JSONResponse(proof)
