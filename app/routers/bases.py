"""Lawful bases per subject and purpose (crm)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.pagination import Page
from app.models.basis import LawfulBasisHistoryPublic, LawfulBasisPublic, LawfulBasisSet
from app.models.catalogue import KEY_PATTERN
from app.services.bases import records as bases

router = APIRouter(prefix="/v1/subjects/{subject_id}/bases", tags=["lawful bases"])
Reader = Annotated[Principal, Depends(require("bases:read"))]
Writer = Annotated[Principal, Depends(require("bases:write"))]
PurposeKey = Annotated[str, Path(pattern=KEY_PATTERN)]


@router.get(
    "", response_model=Page[LawfulBasisPublic], responses=problem_responses(401, 403, 404, 422)
)
async def list_bases(
    subject_id: uuid.UUID, session: SessionDep, _: Reader
) -> Page[LawfulBasisPublic]:
    """The lawful basis recorded for each purpose."""
    rows = await bases.list_bases(session, subject_id=subject_id)
    return Page(items=[LawfulBasisPublic.model_validate(r) for r in rows], next_cursor=None)


@router.put(
    "/{purpose}",
    response_model=LawfulBasisPublic,
    responses=problem_responses(401, 403, 404, 409, 413, 422),
)
async def set_basis(
    subject_id: uuid.UUID,
    purpose: PurposeKey,
    body: LawfulBasisSet,
    session: SessionDep,
    principal: Writer,
) -> LawfulBasisPublic:
    """Record the basis for a purpose; 422 names the bases the purpose allows."""
    record = await bases.set_basis(
        session, principal, subject_id=subject_id, purpose=purpose, data=body
    )
    return LawfulBasisPublic.model_validate(record)


@router.get(
    "/{purpose}/history",
    response_model=Page[LawfulBasisHistoryPublic],
    responses=problem_responses(401, 403, 404, 422),
)
async def basis_history(
    subject_id: uuid.UUID, purpose: PurposeKey, session: SessionDep, _: Reader
) -> Page[LawfulBasisHistoryPublic]:
    """Every change to the basis for a purpose: who, when, and the value replaced."""
    rows = await bases.basis_history(session, subject_id=subject_id, purpose=purpose)
    return Page(items=[LawfulBasisHistoryPublic.model_validate(r) for r in rows], next_cursor=None)


@router.delete(
    "/{purpose}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 422),
)
async def end_basis(
    subject_id: uuid.UUID, purpose: PurposeKey, session: SessionDep, principal: Writer
) -> Response:
    """End the basis for a purpose (the history keeps it)."""
    await bases.end_basis(session, principal, subject_id=subject_id, purpose=purpose)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
