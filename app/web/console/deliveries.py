"""Webhook deliveries that failed for good, per endpoint, with the receiver's last answer,
and (admin) a button to send one again through the API's retry
(app.services.webhooks.deliveries.retry, as `POST .../deliveries/{id}/retry`)."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.core.db import SessionDep
from app.core.pagination import Cursor
from app.models.base import utcnow
from app.services.webhooks import deliveries, endpoints
from app.web.console.common import Posted, Viewer, attempt, reader, render, writer

router = APIRouter(include_in_schema=False)
Reader = Annotated[Viewer, Depends(reader("webhooks:read"))]
Retrier = Annotated[Posted, Depends(writer("webhooks:write"))]
ENDPOINTS_SHOWN = 100  # a handful in practice; past that, the page says there are more
PER_ENDPOINT = 20


async def deliveries_page(
    session: SessionDep, viewer: Viewer, status: int = 200, **extra: Any
) -> Response:
    listed = await endpoints.listing(session, limit=ENDPOINTS_SHOWN, cursor=None)
    failed = [
        (endpoint, await deliveries.listing(
            session, endpoint.key, status="failed", limit=PER_ENDPOINT, cursor=None
        ))
        for endpoint in listed.items
    ]  # fmt: skip
    return render(
        "deliveries.html",
        viewer,
        status,
        failed=failed,
        more_endpoints=listed.next_cursor is not None,
        **extra,
    )


@router.get("/console/deliveries")
async def console_deliveries(
    session: SessionDep,
    viewer: Reader,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    return await deliveries_page(session, viewer, done=done)


@router.get("/console/deliveries/{key}")
async def console_endpoint_deliveries(
    key: str,
    session: SessionDep,
    viewer: Reader,
    cursor: Cursor = None,
) -> Response:
    """One endpoint's failed deliveries, page after page (keyset on the feed's position)."""
    await endpoints.exists(session, key)
    page = await deliveries.listing(session, key, status="failed", limit=50, cursor=cursor)
    return render("endpoint_deliveries.html", viewer, key=key, page=page)


@router.post("/console/deliveries/{key}/{delivery_id}/retry")
async def console_retry_delivery(
    key: str, delivery_id: uuid.UUID, request: Request, session: SessionDep, posted: Retrier
) -> Response:
    settings = request.app.state.settings
    _, error, status = await attempt(
        session, lambda: deliveries.retry(session, settings, key, delivery_id, utcnow())
    )
    if error is None:
        return RedirectResponse(f"/console/deliveries?done={delivery_id}", status_code=303)
    return await deliveries_page(session, posted.viewer, status, error=error)
