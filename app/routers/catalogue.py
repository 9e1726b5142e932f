"""Catalogues: purposes, recipients, policies, the controller (every role reads, admin
writes)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status
from fastapi.responses import JSONResponse

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.idempotency import idempotent
from app.core.pagination import Cursor, Limit, Page
from app.models.catalogue import (
    KEY_PATTERN,
    Category,
    CategoryPublic,
    PolicyCreate,
    PolicyPublic,
    Purpose,
    PurposePublic,
    PurposeUpdate,
    Recipient,
    RecipientPublic,
    RecipientUpdate,
    Source,
    SourcePublic,
)
from app.models.controller import ControllerPublic, ControllerUpdate
from app.services.catalogue import controller as controller_identity
from app.services.catalogue import entries as catalogue

router = APIRouter(prefix="/v1", tags=["catalogues"])
Reader = Annotated[Principal, Depends(require("catalogue:read"))]
Admin = Annotated[Principal, Depends(require("catalogue:write"))]
Key = Annotated[str, Path(pattern=KEY_PATTERN)]
READ_ERRORS = problem_responses(401, 403, 422)
WRITE_ERRORS = problem_responses(401, 403, 409, 413, 422)


def put_responses(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    """A PUT that creates answers 201, one that replaces 200 (both with the stored row)."""
    return {
        200: {"description": "Replaced"},
        201: {"description": "Created", "model": model},
        **WRITE_ERRORS,
    }


@router.get("/purposes", response_model=Page[PurposePublic], responses=READ_ERRORS)
async def list_purposes(
    session: SessionDep, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> Page[Purpose]:
    """Purposes of processing and the lawful bases each may rest on."""
    return await catalogue.list_keyed(session, Purpose, limit=limit, cursor=cursor)


@router.put(
    "/purposes/{key}",
    response_model=PurposePublic,
    responses=put_responses(PurposePublic),
)
async def put_purpose(
    key: Key, body: PurposeUpdate, session: SessionDep, principal: Admin, response: Response
) -> Purpose:
    """Create or replace a purpose (201 when created)."""
    row, created = await catalogue.put_purpose(session, principal, key=key, data=body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return row


@router.get("/recipients", response_model=Page[RecipientPublic], responses=READ_ERRORS)
async def list_recipients(
    session: SessionDep, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> Page[Recipient]:
    """Recipients of personal data, where they are and the transfer safeguard."""
    return await catalogue.list_keyed(session, Recipient, limit=limit, cursor=cursor)


@router.put(
    "/recipients/{key}",
    response_model=RecipientPublic,
    responses=put_responses(RecipientPublic),
)
async def put_recipient(
    key: Key, body: RecipientUpdate, session: SessionDep, principal: Admin, response: Response
) -> Recipient:
    """Create or replace a recipient (201 when created)."""
    row, created = await catalogue.put_recipient(session, principal, key=key, data=body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return row


@router.get("/categories", response_model=Page[CategoryPublic], responses=READ_ERRORS)
async def list_categories(
    session: SessionDep, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> Page[Category]:
    """Categories of data subject and their retention rules."""
    return await catalogue.list_keyed(session, Category, limit=limit, cursor=cursor)


@router.get("/sources", response_model=Page[SourcePublic], responses=READ_ERRORS)
async def list_sources(
    session: SessionDep, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> Page[Source]:
    """Sources of personal data."""
    return await catalogue.list_keyed(session, Source, limit=limit, cursor=cursor)


@router.get("/policies", response_model=Page[PolicyPublic], responses=READ_ERRORS)
async def list_policies(
    session: SessionDep, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> Page[PolicyPublic]:
    """Published versions of the privacy policy."""
    page = await catalogue.list_policies(session, limit=limit, cursor=cursor)
    return Page(
        items=[PolicyPublic.model_validate(p) for p in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/policies",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyPublic,
    responses=WRITE_ERRORS,
)
async def create_policy(
    body: PolicyCreate, request: Request, session: SessionDep, principal: Admin
) -> JSONResponse:
    """Record a new policy version. `reconsent_purposes` names the purposes whose earlier
    consents stop counting from this version's `published_at` (reason `consent_outdated`);
    `GET /v1/reports/reconsent` lists who must be asked again."""

    async def create() -> tuple[int, Any]:
        policy = await catalogue.create_policy(session, principal, data=body)
        return 201, PolicyPublic.model_validate(policy)

    return await idempotent(session, principal, request, body, create)


@router.get("/controller", response_model=ControllerPublic, responses=READ_ERRORS)
async def get_controller(session: SessionDep, _: Reader) -> ControllerPublic:
    """Who the controller is: the identity receipts, consent proofs, the record of
    processing, access reports and the person's pages show."""
    return await controller_identity.identity(session)


@router.put(
    "/controller",
    response_model=ControllerPublic,
    responses={200: {"description": "Replaced"}, **problem_responses(401, 403, 413, 422)},
)
async def put_controller(
    body: ControllerUpdate, session: SessionDep, principal: Admin
) -> ControllerPublic:
    """Replace the controller's identity (every field; an optional one left out becomes
    null). Everything issued from then on shows it, receipts of earlier events included."""
    return await controller_identity.put(session, principal, data=body)
