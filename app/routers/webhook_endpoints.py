"""Webhooks out (admin sets them up; auditors read them, never a secret): endpoints, their
secrets (shown once), and their deliveries."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request, Response, status

from app.core.auth import Principal, require
from app.core.db import SessionDep
from app.core.errors import problem_responses
from app.core.pagination import Cursor, Limit, Page
from app.models.base import utcnow
from app.models.catalogue import KEY_PATTERN
from app.models.webhook import (
    WebhookDeliveryPublic,
    WebhookEndpointPublic,
    WebhookEndpointPut,
    WebhookEndpointWithSecret,
)
from app.services.webhooks import deliveries, endpoints

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])
Reader = Annotated[Principal, Depends(require("webhooks:read"))]
Admin = Annotated[Principal, Depends(require("webhooks:write"))]
EndpointKey = Annotated[str, Path(pattern=KEY_PATTERN)]


@router.put(
    "/{key}",
    response_model=WebhookEndpointWithSecret,
    responses={
        200: {"description": "Changed (the secret is unchanged and not shown)"},
        201: {"description": "Created, with its signing secret (shown only here)"},
        **problem_responses(401, 403, 422),
    },
)
async def put_webhook_endpoint(
    key: EndpointKey,
    body: WebhookEndpointPut,
    session: SessionDep,
    _: Admin,
    request: Request,
    response: Response,
) -> WebhookEndpointWithSecret:
    """Create an endpoint (201, with its `whsec_` secret, shown once) or change its URL,
    kinds and description (200); a PUT also enables an endpoint disabled by a 410."""
    found, created = await endpoints.put(session, request.app.state.settings, key, body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return found


@router.get(
    "",
    response_model=Page[WebhookEndpointPublic],
    responses=problem_responses(401, 403, 422),
)
async def list_webhook_endpoints(
    session: SessionDep, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> Page[WebhookEndpointPublic]:
    """The endpoints, without their secrets."""
    return await endpoints.listing(session, limit=limit, cursor=cursor)


@router.delete(
    "/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_webhook_endpoint(key: EndpointKey, session: SessionDep, _: Admin) -> Response:
    """Remove an endpoint with its deliveries (those waiting are not sent)."""
    await endpoints.delete(session, key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{key}/rotate-secret",
    response_model=WebhookEndpointWithSecret,
    responses=problem_responses(401, 403, 404, 422),
)
async def rotate_webhook_secret(
    key: EndpointKey, session: SessionDep, _: Admin, request: Request
) -> WebhookEndpointWithSecret:
    """A new secret, shown once. For 24 hours every message carries two signatures (new
    and previous secret), so the receiver can switch without missing one."""
    return await endpoints.rotate(session, request.app.state.settings, key)


@router.get(
    "/{key}/deliveries",
    response_model=Page[WebhookDeliveryPublic],
    responses=problem_responses(401, 403, 404, 422),
)
async def list_webhook_deliveries(
    key: EndpointKey,
    session: SessionDep,
    _: Reader,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[WebhookDeliveryPublic]:
    """Deliveries, newest first: attempts, the last answer, the next try."""
    await endpoints.exists(session, key)
    return await deliveries.listing(session, key, status=status, limit=limit, cursor=cursor)


@router.post(
    "/{key}/deliveries/{delivery_id}/retry",
    response_model=WebhookDeliveryPublic,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def retry_webhook_delivery(
    key: EndpointKey, delivery_id: uuid.UUID, session: SessionDep, _: Admin, request: Request
) -> WebhookDeliveryPublic:
    """Send a failed delivery again (tried at once, retried for another 24 hours); 409
    unless it failed."""
    settings = request.app.state.settings
    return await deliveries.retry(session, settings, key, delivery_id, utcnow())
