"""Marketing opt-outs (crm, website, sync)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import EmailStr

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.idempotency import idempotent
from app.models.optout import OptOutCheck, OptOutCreate, OptOutPublic
from app.services.optouts import records as optouts

router = APIRouter(prefix="/v1/opt-outs", tags=["opt-outs"])
Writer = Annotated[Principal, Depends(require("optouts:write"))]
Reader = Annotated[Principal, Depends(require("optouts:read"))]


@router.post(
    "",
    status_code=201,
    response_model=OptOutPublic,
    responses={
        200: {"model": OptOutPublic, "description": "Already opted out"},
        **problem_responses(401, 403, 413, 422),
    },
)
async def create_opt_out(
    body: OptOutCreate, request: Request, session: SessionDep, principal: Writer
) -> JSONResponse:
    """Opt an e-mail out of direct marketing, at once (200 with the first one on repeat)."""

    async def create() -> tuple[int, Any]:
        optout, created = await optouts.record_optout(session, principal, data=body)
        return (201 if created else 200), optout

    return await idempotent(session, principal, request, body, create)


@router.get("/check", response_model=OptOutCheck, responses=problem_responses(401, 403, 422))
async def check_opt_out(
    session: SessionDep, _: Reader, email: Annotated[EmailStr, Query()]
) -> OptOutCheck:
    """Whether an e-mail is opted out of direct marketing, and on which channels."""
    return await optouts.check(session, email=email)
