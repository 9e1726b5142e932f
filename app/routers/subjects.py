"""Subjects (crm)."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import EmailStr

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.driver import DatabaseDep, json_response
from app.core.errors import problem_responses
from app.core.idempotency import idempotent
from app.core.pagination import Cursor, Limit, Page
from app.models.subject import (
    SubjectCreate,
    SubjectMerge,
    SubjectMergePublic,
    SubjectPublic,
    SubjectUpdate,
    to_public,
)
from app.services.subjects import merge as merging
from app.services.subjects import records as subjects

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])
Reader = Annotated[Principal, Depends(require("subjects:read"))]
Writer = Annotated[Principal, Depends(require("subjects:write"))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SubjectPublic,
    responses=problem_responses(401, 403, 409, 413, 422),
)
async def create_subject(
    body: SubjectCreate, request: Request, session: SessionDep, principal: Writer
) -> JSONResponse:
    """Create a subject; only the fields of the policy are accepted."""

    async def create() -> tuple[int, Any]:
        return 201, to_public(await subjects.create_subject(session, principal, data=body))

    return await idempotent(session, principal, request, body, create)


@router.get("", response_model=Page[SubjectPublic], responses=problem_responses(401, 403, 422))
async def list_subjects(
    session: SessionDep,
    _: Reader,
    email: Annotated[EmailStr | None, Query()] = None,
    category: Annotated[str | None, Query(max_length=63)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[SubjectPublic]:
    """List subjects, optionally by e-mail or category."""
    return await subjects.list_subjects(  # guard: allow-subject-read (the CRM's own records)
        session, email=email, category=category, limit=limit, cursor=cursor
    )


@router.get(
    "/{subject_id}", response_model=SubjectPublic, responses=problem_responses(401, 403, 404, 422)
)
async def get_subject(subject_id: uuid.UUID, db: DatabaseDep, _: Reader) -> Response:
    """One subject, with its status (active, restricted or erased)."""
    return json_response(await subjects.read_subject(db, subject_id))


@router.patch(
    "/{subject_id}",
    response_model=SubjectPublic,
    responses=problem_responses(401, 403, 404, 409, 413, 422),
)
async def update_subject(
    subject_id: uuid.UUID, body: SubjectUpdate, session: SessionDep, principal: Writer
) -> SubjectPublic:
    """Change some of a subject's fields, including interest_ceased_at."""
    subject = await subjects.update_subject(session, principal, subject_id=subject_id, data=body)
    return to_public(subject)


@router.post(
    "/{subject_id}/merge",
    response_model=SubjectMergePublic,
    responses=problem_responses(401, 403, 404, 409, 413, 422),
)
async def merge_subject(
    subject_id: uuid.UUID,
    body: SubjectMerge,
    request: Request,
    session: SessionDep,
    principal: Writer,
) -> JSONResponse:
    """The same person held twice: merge the subject `from` into this one. Nothing stored is
    rewritten; `from` is marked `merged_into` this one, whose reads include its records.
    409 (with a `reason`) while either is erased, restricted, already merged or has an open
    erasure request, or when both are the same subject."""

    async def create() -> tuple[int, Any]:
        return 200, await merging.merge(session, principal, into=subject_id, from_id=body.from_)

    return await idempotent(session, principal, request, body, create)
