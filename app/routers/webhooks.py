"""The MailChimp webhook. No API key (MailChimp cannot send one): the `secret` query
parameter is the credential, compared in constant time. Kept in its own router so that it
is included without the authentication the other routers default to."""

import hmac
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request

from app.core.db import SessionDep
from app.core.errors import (
    ProblemError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    problem_responses,
)
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


def _check_secret(request: Request, secret: str | None) -> None:
    configured = request.app.state.settings.mailchimp_webhook_secret
    if configured is None:
        raise ServiceUnavailable(
            "The MailChimp webhook is not configured: set CONSENT_MAILCHIMP_WEBHOOK_SECRET."
        )
    given = (secret or "").encode()
    if not hmac.compare_digest(given, configured.get_secret_value().encode()):
        raise Unauthorized("The webhook `secret` is missing or wrong.")


@router.get(
    "/mailchimp",
    response_model=WebhookAnswer,
    responses=problem_responses(401, 422, 503),
)
async def mailchimp_webhook_check(request: Request, secret: Secret = None) -> WebhookAnswer:
    """MailChimp's check of the webhook URL: 200 when the secret is right."""
    _check_secret(request, secret)
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
) -> WebhookAnswer:
    """A MailChimp event: unsubscribe (an opt-out, at once), cleaned, upemail; others are
    acknowledged and change nothing."""
    _check_secret(request, secret)
    if not request.headers.get("content-type", "").startswith(FORM):
        raise UnsupportedMediaType(f"MailChimp sends `{FORM}`.")
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        form = dict(parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FIELDS))
    except ValueError as exc:
        raise Unprocessable(f"A MailChimp event has at most {MAX_FIELDS} fields.") from exc
    return await mailchimp_events.handle(session, form)
