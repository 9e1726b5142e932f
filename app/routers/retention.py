"""Retention (§7): rules per subject category (every role reads, admin writes) and the
sweep (admin only)."""

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.models.catalogue import KEY_PATTERN
from app.models.retention import RetentionRulePublic, RetentionRuleUpdate, SweepReport
from app.services.retention import rules, sweep

router = APIRouter(prefix="/v1", tags=["retention"])
Reader = Annotated[Principal, Depends(require("catalogue:read"))]
Admin = Annotated[Principal, Depends(require("catalogue:write"))]
Sweeper = Annotated[Principal, Depends(require("retention:run"))]
CategoryKey = Annotated[str, Path(pattern=KEY_PATTERN)]


@router.get(
    "/retention-rules",
    response_model=list[RetentionRulePublic],
    responses=problem_responses(401, 403),
)
async def list_retention_rules(session: SessionDep, _: Reader) -> list[RetentionRulePublic]:
    """The retention rule of every subject category (§7)."""
    return await rules.list_rules(session)


@router.get(
    "/retention-rules/{category}",
    response_model=RetentionRulePublic,
    responses=problem_responses(401, 403, 404, 422),
)
async def get_retention_rule(
    category: CategoryKey, session: SessionDep, _: Reader
) -> RetentionRulePublic:
    """One category's retention rule."""
    return await rules.get_rule(session, category)


@router.put(
    "/retention-rules/{category}",
    response_model=RetentionRulePublic,
    responses=problem_responses(401, 403, 404, 413, 422),
)
async def put_retention_rule(
    category: CategoryKey, body: RetentionRuleUpdate, session: SessionDep, principal: Admin
) -> RetentionRulePublic:
    """Set a category's retention rule; the gate and the sweep apply it at once."""
    return await rules.put_rule(session, principal, category=category, data=body)


@router.post(
    "/retention/sweep",
    response_model=SweepReport,
    responses=problem_responses(401, 403, 422),
)
async def run_retention_sweep(
    request: Request,
    session: SessionDep,
    principal: Sweeper,
    dry_run: Annotated[
        bool, Query(description="true (the default): report only, change nothing")
    ] = True,
) -> Response:
    """Report (dry run) or erase every subject whose retention period has ended."""
    if dry_run:
        report = await sweep.dry_run(session)
        return Response(orjson.dumps(report), media_type="application/json")
    result = await sweep.run(
        request.app.state.sessionmaker,
        principal,
        batch_size=request.app.state.settings.retention_sweep_batch,
    )
    return Response(result.model_dump_json(), media_type="application/json")
