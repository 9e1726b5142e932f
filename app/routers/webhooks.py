"""The MailChimp webhook. No API key (MailChimp cannot send one): the `secret` query
parameter is the credential, compared in constant time. A wrong or missing secret counts
as a failed authentication from the client's address, like a bad API key (app.core.guard):
past the limit it is answered 429 with Retry-After. Kept in its own router so that it is
included without the authentication the other routers default to."""

import hashlib
import hmac
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request, Response

from app.core.db import SessionDep
from app.core.errors import (
    ProblemError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    problem_response,
    problem_responses,
)
from app.core.guard import AUTH_THROTTLED, FailedAuthLimiter, client_address
from app.models.sync import WebhookAnswer
from app.services.sync import mailchimp_events

router = APIRouter(prefix="/v1/webhooks", tags=["sync"])
Secret = Annotated[
    str | None, Query(max_length=200, description="CONSENT_MAILCHIMP_WEBHOOK_SECRET")
]
FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 200
FIELDS = [
    "type",
    "fired_at",
    "data[email]",
    "data[reason]",
    "data[list_id]",
    "data[old_email]",
    "data[new_email]",
]


class UnsupportedMediaType(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


def _digest(value: str) -> bytes:
    # Compared as digests: the time taken depends on neither the secret nor its length.
    return hashlib.sha256(value.encode()).digest()


def _check_secret(request: Request, secret: str | None) -> Response | None:
    """None when the secret is right. A wrong or missing one is counted with the other failed
    authentications of the client's address (app.core.guard); past the limit it is answered
    429 with Retry-After instead of 401. As for API keys, the throttle refuses failures only:
    the right secret is served even from an address that failed many times (behind a proxy
    not listed in CONSENT_TRUSTED_PROXIES, every caller has the proxy's address)."""
    configured = request.app.state.settings.mailchimp_webhook_secret
    if configured is None or not configured.get_secret_value():
        raise ServiceUnavailable(
            "The MailChimp webhook is not configured: set CONSENT_MAILCHIMP_WEBHOOK_SECRET."
        )
    if hmac.compare_digest(_digest(secret or ""), _digest(configured.get_secret_value())):
        return None
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    client = client_address(request.scope)
    wait = limiter.retry_after(client)
    limiter.failed(client, "webhook_secret")
    if not wait:
        raise Unauthorized("The webhook `secret` is missing or wrong.")
    AUTH_THROTTLED.inc()
    response = problem_response(
        429,
        "too-many-requests",
        "Too many failed authentications",
        "Too many requests with a missing or wrong webhook secret from this address.",
    )
    response.headers["Retry-After"] = str(wait)
    return response


@router.get(
    "/mailchimp",
    response_model=WebhookAnswer,
    responses=problem_responses(401, 422, 503),
)
async def mailchimp_webhook_check(
    request: Request, secret: Secret = None
) -> WebhookAnswer | Response:
    """MailChimp's check of the webhook URL: 200 when the secret is right."""
    if (refused := _check_secret(request, secret)) is not None:
        return refused
    return WebhookAnswer(type="url_check", recorded=False)


@router.post(
    "/mailchimp",
    response_model=WebhookAnswer,
    responses=problem_responses(401, 413, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                FORM: {
                    "schema": {
                        "type": "object",
                        "properties": {f: {"type": "string"} for f in FIELDS},
                        "required": ["type"],
                        "additionalProperties": {"type": "string"},
                    }
                }
            },
        }
    },
)
async def mailchimp_webhook(
    request: Request, session: SessionDep, secret: Secret = None
) -> WebhookAnswer | Response:
    """A MailChimp event: unsubscribe (an opt-out, at once), cleaned, upemail; others are
    acknowledged and change nothing. Text with control, bidi or invisible characters, or an
    e-mail field that is not a bare address, is a 422 naming the field; nothing is stored."""
    if (refused := _check_secret(request, secret)) is not None:
        return refused
    if not request.headers.get("content-type", "").startswith(FORM):
        raise UnsupportedMediaType(f"MailChimp sends `{FORM}`.")
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        form = dict(parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FIELDS))
    except ValueError as exc:
        raise Unprocessable(f"A MailChimp event has at most {MAX_FIELDS} fields.") from exc
    return await mailchimp_events.handle(session, form)
