"""Consent events and receipts (crm, website)."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.driver import Conn, DatabaseDep
from app.core.errors import problem_responses
from app.core.idempotency import run_once
from app.core.pagination import Cursor, Limit, Page
from app.core.signing import get_signer
from app.models.consent import (
    ConsentEventCreate,
    ConsentEventCreated,
    ConsentEventPending,
    ConsentEventPublic,
    ConsentStatePublic,
)
from app.services.consent import events as consent
from app.services.consent import reading as consent_reading
from app.services.consent import record_27560

router = APIRouter(prefix="/v1", tags=["consent"])
Writer = Annotated[Principal, Depends(require("consent:write"))]
Reader = Annotated[Principal, Depends(require("consent:read"))]
JOSE = "application/jose"


@router.post(
    "/consent-events",
    status_code=201,
    response_model=ConsentEventCreated,
    responses={
        202: {
            "model": ConsentEventPending,
            "description": "`confirm_by_email`: pending until the person confirms by e-mail",
        },
        **problem_responses(401, 403, 404, 409, 413, 422, 503),
    },
)
async def create_consent_event(
    body: ConsentEventCreate,
    request: Request,
    db: DatabaseDep,
    principal: Writer,
    sec_gpc: Annotated[str | None, Header(alias="Sec-GPC")] = None,
) -> Response:
    """Record consent given or withdrawn; returns the event and its receipt. A withdrawal
    needs only the subject, purpose and action (Art 7(3)); `method: gpc` withdraws any
    purpose; `Sec-GPC: 1` also withdraws and objects to `partner_referral`. With
    `confirm_by_email` a `given` is 202 and pending until the person confirms it from the
    e-mail the service sends (double opt-in)."""
    gpc = sec_gpc == "1"
    status = 202 if body.confirm_by_email else 201

    async def create(con: Conn) -> tuple[int, Any]:
        return status, await consent.consent_payload(con, principal, data=body, gpc=gpc)

    return await run_once(
        db,
        principal,
        request,
        body,
        create,
        extra=f"gpc={gpc}",
        unit=consent.unit_of_work(body, gpc),
    )


@router.get(
    "/consent-events",
    response_model=Page[ConsentEventPublic],
    responses=problem_responses(401, 403, 422),
)
async def list_consent_events(
    session: SessionDep,
    _: Reader,
    subject_id: Annotated[uuid.UUID, Query()],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ConsentEventPublic]:
    """A subject's consent history, oldest first."""
    return await consent_reading.list_events(
        session, subject_id=subject_id, limit=limit, cursor=cursor
    )


@router.get(
    "/subjects/{subject_id}/consents",
    response_model=Page[ConsentStatePublic],
    responses=problem_responses(401, 403, 404, 422),
)
async def list_subject_consents(
    subject_id: uuid.UUID, session: SessionDep, _: Reader
) -> Page[ConsentStatePublic]:
    """The current consent state per purpose (and per recipient for transfers)."""
    return Page(
        items=await consent_reading.current_state(session, subject_id=subject_id), next_cursor=None
    )


@router.get(
    "/consent-events/{event_id}/receipt",
    responses={
        200: {"content": {"application/json": {}, JOSE: {}}},
        **problem_responses(401, 403, 404, 422),
    },
)
async def get_consent_receipt(
    event_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    _: Reader,
) -> Response:
    """The consent receipt as JSON, or as a compact JWS with `Accept: application/jose`."""
    receipt = await consent_reading.receipt(session, event_id=event_id)
    if JOSE in request.headers.get("accept", ""):
        token = get_signer(request.app.state.settings).sign(receipt)
        return Response(token, media_type=JOSE)
    return JSONResponse(receipt)


@router.get(
    "/consent-events/{event_id}/record",
    responses={
        200: {
            "description": "The ISO/IEC TS 27560 consent record (JSON-LD, W3C DPV terms).",
            "content": {record_27560.MEDIA_TYPE: {}},
        },
        **problem_responses(401, 403, 404, 422),
    },
)
async def get_consent_record(
    event_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    _: Reader,
) -> Response:
    """The event as an ISO/IEC TS 27560 consent record in JSON-LD with W3C DPV terms, as
    the DPV community group's guide lays it out (https://w3id.org/dpv/guides/consent-27560),
    with its signed receipt attached (`@reverse` `dpv:hasRecordOfActivity`: a compact JWS,
    verifiable with `GET /v1/keys`). Always `application/ld+json`; the context is inline."""
    signer = get_signer(request.app.state.settings)
    document = await record_27560.consent_record(session, signer, event_id=event_id)
    return JSONResponse(document, media_type=record_27560.MEDIA_TYPE)
