"""Consent in bulk: the export of every event with its receipt, the re-consent list and the
consents due for refresh (crm, auditor)."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.pagination import Cursor, Limit, Page
from app.models.base import Timestamp
from app.models.catalogue import KEY_PATTERN
from app.models.consent import ReconsentItem, RefreshItem
from app.services.consent import export as consent_export
from app.services.consent import reconsent, refresh

router = APIRouter(prefix="/v1", tags=["consent"])
Reader = Annotated[Principal, Depends(require("consent:read"))]
PurposeKey = Annotated[str | None, Query(max_length=63, pattern=KEY_PATTERN)]
WithinDays = Annotated[
    int, Query(ge=1, le=3660, description="How many days ahead to look (default 30).")
]
MEDIA = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
CURSOR_DOC = (
    "Pass as `cursor` next time to get only what was recorded since: every event whose "
    "writing transaction ended before this export began is in this one, and none is "
    "ever skipped by the next."
)


@router.get(
    "/consent-events/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The events, oldest transaction first, streamed.",
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "headers": {
                consent_export.NEXT_CURSOR_HEADER: {
                    "description": CURSOR_DOC,
                    "schema": {"type": "string"},
                }
            },
        },
        **problem_responses(401, 403, 422),
    },
)
async def export_consent_events(
    request: Request,
    session: SessionDep,
    _: Reader,
    format: Literal["ndjson", "csv"] = "ndjson",
    since: Annotated[
        Timestamp | None, Query(description="Only events recorded at or after this time.")
    ] = None,
    purpose: PurposeKey = None,
    cursor: Annotated[
        str | None,
        Query(max_length=500, description="The `X-Next-Cursor` of an earlier export."),
    ] = None,
) -> StreamingResponse:
    """Every consent event with its receipt fields, for an auditor or a warehouse.

    NDJSON: one object per line, the event's fields and its `receipt`. CSV: the event's
    fields then the receipt's, flattened; cells that a spreadsheet would run as a formula
    are prefixed with `'`. Events of erased subjects carry no personal data (evidence is
    null, `subject_erased` is true). The response header `X-Next-Cursor` carries the
    cursor for the next incremental pull (no trailing line). Streamed at flat memory."""
    plan = await consent_export.plan(session, purpose=purpose, since=since, cursor=cursor)
    writer = consent_export.ndjson if format == "ndjson" else consent_export.csv_rows

    async def body():  # type: ignore[no-untyped-def]
        # The request's session is committed and closed before streaming starts.
        async with request.app.state.sessionmaker() as stream_session:
            async for chunk in writer(stream_session, plan):
                yield chunk

    return StreamingResponse(
        body(), media_type=MEDIA[format], headers=_export_headers(plan.next_cursor, format)
    )


def _export_headers(next_cursor: str, format: str) -> dict[str, str]:
    """A download, named for its format, with the cursor of the next incremental pull."""
    extension = "ndjson" if format == "ndjson" else "csv"
    return {
        consent_export.NEXT_CURSOR_HEADER: next_cursor,
        "Content-Disposition": f'attachment; filename="consent-events.{extension}"',
        "Cache-Control": "no-store",
    }


@router.get(
    "/reports/reconsent",
    response_model=Page[ReconsentItem],
    responses=problem_responses(401, 403, 422),
)
async def reconsent_report(
    session: SessionDep,
    _: Reader,
    purpose: PurposeKey = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ReconsentItem]:
    """Who must be asked for consent again: live subjects whose consent for the purpose
    (all purposes when omitted) was given under a policy version older than one that
    names the purpose in `reconsent_purposes`. Decisions deny them `consent_outdated`."""
    return await reconsent.outdated_consents(session, purpose=purpose, limit=limit, cursor=cursor)


@router.get(
    "/reports/consent-refresh",
    response_model=Page[RefreshItem],
    responses=problem_responses(401, 403, 422),
)
async def consent_refresh_report(
    session: SessionDep,
    _: Reader,
    purpose: PurposeKey = None,
    within_days: WithinDays = 30,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[RefreshItem]:
    """Consents that run out within `within_days`, soonest first: live subjects whose
    consent for the purpose (every purpose with `consent_valid_months` when omitted) was
    given so long ago that its period ends in that window. Ask them again: a fresh `given`
    starts a new period. Once it has run out, decisions deny `consent_expired`."""
    return await refresh.due_for_refresh(
        session, purpose=purpose, within_days=within_days, limit=limit, cursor=cursor
    )
