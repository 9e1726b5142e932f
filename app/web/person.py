"""The person's own pages, reached by a signed link with no API key: `/u/{token}` (RFC 8058
one-click unsubscribe and its confirmation page) and `/p/{token}` (the preference page).

This router is included WITHOUT the API-key dependency: the token is the credential.
Errors here are small HTML pages (the reader is a person or a mailbox provider), and every
response carries the same privacy headers. Form bodies arrive as real forms: the JSON-body
middleware only rewrites paths under /v1/.
"""

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession  # guard: allow-subject-read (type only)

from app.core.config import Settings
from app.core.db import SessionDep
from app.core.errors import ProblemError
from app.core.link_tokens import (
    ExpiredToken,
    InvalidToken,
    Kind,
    LinkClaims,
    check_form_token,
    form_token,
    token_fingerprint,
    verify_link,
)
from app.core.rate_limit import SlidingWindowLimiter
from app.models.link import ONE_CLICK
from app.services.catalogue import controller as controller_identity
from app.services.person import pages as person
from app.web import filters

router = APIRouter(tags=["person pages"])
HTML_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not the RFC 8058 body", "content": {"text/html": {}}},
    404: {"description": "Not a valid link (tampered, unknown key)", "content": {"text/html": {}}},
    410: {
        "description": "The link has expired, or its subject is gone",
        "content": {"text/html": {}},
    },
    429: {"description": "Too many requests for this link", "content": {"text/html": {}}},
}
# One media type documented, both accepted (RFC 8058 senders use either): a body declared
# under two media types made generated clients (openapi-python-client) emit code that fails
# to import.
ONE_CLICK_BODY = {
    "requestBody": {
        "required": True,
        "description": "`List-Unsubscribe=One-Click`, form-encoded (multipart/form-data is"
        " accepted too).",
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["List-Unsubscribe"],
                    "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
                }
            }
        },
    }
}
log = logging.getLogger("consent_api.person")
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
filters.install(templates.env)
ASSETS = {
    "person.css": (HERE / "static" / "person" / "person.css", "text/css"),
    "icon.svg": (HERE / "static" / "person" / "icon.svg", "image/svg+xml"),
}

SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    # No script at all, nothing from anywhere else, no framing, forms post only back here.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
DONE_MESSAGES = {
    "withdrawn": "Done: your consent is withdrawn. We will stop using your data for that.",
    "given": "Done: thank you, your consent is recorded.",
    "optout": "Done: you will get no more marketing from us.",
    "request": "Done: we have your request and will answer by the date shown below. We have"
    " e-mailed you a link: please press the button on its page to confirm the request is yours.",
}
ERRORS = {
    400: ("This request could not be understood", "Please use the button on the page."),
    403: ("This form has expired", "Please open the page again and repeat your choice."),
    404: ("This link is not valid", "Please use the most recent link from one of our e-mails."),
    409: ("Something changed", "Please open the page again and check your choice."),
    410: ("This link has expired", "Please use the link in a more recent e-mail from us."),
    422: ("This choice is not available", "Please open the page again."),
    429: ("Too many requests", "Please wait a minute and try again."),
}
# Form fields are all optional strings: anything missing or wrong gets the plain 4xx page
# from the services' own checks, never a JSON problem document.
FormText = Annotated[str, Form()]
FAILURES = (ProblemError, person.LinkGone, ValidationError)


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


async def _controller(request: Request, session: AsyncSession | None) -> dict[str, Any]:
    """Who the page says we are, from the catalogue: through the request's session where it
    has one, else a session of its own (the link checks need none)."""
    if session is not None:
        return await controller_identity.shown(session)
    async with request.app.state.sessionmaker() as own:
        return await controller_identity.shown(own)


async def _render(
    request: Request,
    name: str,
    status: int = 200,
    *,
    session: AsyncSession | None = None,
    **context: Any,
) -> Response:
    if "controller_contact" not in context:
        context["controller_contact"] = await _controller(request, session)
    context.setdefault("controller", context["controller_contact"]["name"])
    return _secure(templates.TemplateResponse(request, name, context, status_code=status))


async def error_page(
    request: Request, status: int, session: AsyncSession | None = None
) -> Response:
    title, hint = ERRORS.get(status, ERRORS[400])
    return await _render(
        request, "person/error.html", status, session=session, title=title, hint=hint
    )


def _limiter(request: Request) -> SlidingWindowLimiter:
    state = request.app.state
    if not hasattr(state, "person_limiter"):
        settings: Settings = state.settings
        state.person_limiter = SlidingWindowLimiter(
            settings.link_rate_limit, settings.link_rate_window_seconds
        )
    limiter: SlidingWindowLimiter = state.person_limiter
    return limiter


async def _claims(request: Request, token: str, kind: Kind) -> LinkClaims | Response:
    """The token's claims, or the error page to answer with (nothing is changed)."""
    if not _limiter(request).allow(token_fingerprint(token)):
        return await error_page(request, 429)
    try:
        return verify_link(request.app.state.settings, token, kind=kind)
    except ExpiredToken:
        return await error_page(request, 410)
    except InvalidToken:
        return await error_page(request, 404)


async def _failed(request: Request, session: AsyncSession, exc: Exception) -> Response:
    await session.rollback()  # nothing half-done is committed
    if isinstance(exc, person.LinkGone):
        return await error_page(request, 410, session)
    if isinstance(exc, ProblemError) and exc.status in ERRORS:
        return await error_page(request, exc.status, session)
    return await error_page(request, 400, session)


@router.get("/p/assets/{name}", include_in_schema=False)
async def person_asset(name: str) -> Response:
    """The pages' own stylesheet and icon (nothing is loaded from anywhere else)."""
    if name not in ASSETS:
        return _secure(Response("Not found", status_code=404, media_type="text/plain"))
    path, media_type = ASSETS[name]
    return _secure(FileResponse(path, media_type=media_type))


@router.get("/u/{token}", response_class=HTMLResponse, responses=HTML_ERRORS)
async def unsubscribe_page(token: str, request: Request) -> Response:
    """A confirmation page with one button; a GET never changes anything (mail scanners)."""
    claims = await _claims(request, token, "u")
    if isinstance(claims, Response):
        return claims
    return await _render(request, "person/unsubscribe.html", token=token, one_click=ONE_CLICK)


@router.post(
    "/u/{token}",
    response_class=HTMLResponse,
    responses=HTML_ERRORS,
    openapi_extra=ONE_CLICK_BODY,
)
async def one_click_unsubscribe(token: str, request: Request, session: SessionDep) -> Response:
    """RFC 8058 one-click unsubscribe: records an e-mail marketing opt-out; 200, no redirect.

    No API key and no cookies: the signed token is the credential. Repeating is harmless."""
    claims = await _claims(request, token, "u")
    if isinstance(claims, Response):
        return claims
    try:
        form = await request.form()
    except Exception:  # a malformed body: say so, change nothing
        return await error_page(request, 400, session)
    if form.get("List-Unsubscribe") != "One-Click":
        return await error_page(request, 400, session)
    try:
        await person.unsubscribe(session, claims)
    except FAILURES as exc:
        return await _failed(request, session, exc)
    return await _render(request, "person/unsubscribed.html", session=session)


@router.get("/p/{token}", response_class=HTMLResponse, responses=HTML_ERRORS)
async def preference_page(token: str, request: Request, session: SessionDep) -> Response:
    """The person's preference page: consents, opt-outs, requests, and forms to change them."""
    claims = await _claims(request, token, "p")
    if isinstance(claims, Response):
        return claims
    settings: Settings = request.app.state.settings
    try:
        data = await person.page_data(session, claims)
    except person.LinkGone as exc:
        return await _failed(request, session, exc)
    return await _render(
        request,
        "person/preferences.html",
        controller_contact=data.controller,
        token=token,
        csrf=form_token(settings, token),
        data=data,
        request_types=person.REQUEST_TYPES,
        done=DONE_MESSAGES.get(request.query_params.get("done", "")),
        expires_at=person.expires(claims),
    )


async def _form_claims(request: Request, token: str, csrf: str) -> LinkClaims | Response:
    claims = await _claims(request, token, "p")
    if isinstance(claims, Response):
        return claims
    cross_site = request.headers.get("sec-fetch-site") == "cross-site"
    if cross_site or not check_form_token(request.app.state.settings, token, csrf):
        return await error_page(request, 403)
    return claims


def _back(token: str, done: str) -> Response:
    return _secure(RedirectResponse(f"/p/{token}?done={done}", status_code=303))


@router.post("/p/{token}/withdraw", include_in_schema=False)
async def withdraw_consent(
    token: str,
    request: Request,
    session: SessionDep,
    csrf: FormText = "",
    purpose: FormText = "",
    recipient: FormText = "",
) -> Response:
    claims = await _form_claims(request, token, csrf)
    if isinstance(claims, Response):
        return claims
    try:
        await person.withdraw(
            session,
            claims,
            request.app.state.settings,
            purpose=purpose,
            recipient=recipient or None,
            user_agent=request.headers.get("user-agent"),
        )
    except FAILURES as exc:
        return await _failed(request, session, exc)
    return _back(token, "withdrawn")


@router.post("/p/{token}/give", include_in_schema=False)
async def give_consent(
    token: str,
    request: Request,
    session: SessionDep,
    csrf: FormText = "",
    purpose: FormText = "",
    notice_sha256: FormText = "",
    policy_version: FormText = "",
) -> Response:
    claims = await _form_claims(request, token, csrf)
    if isinstance(claims, Response):
        return claims
    try:
        await person.give(
            session,
            claims,
            request.app.state.settings,
            purpose=purpose,
            shown_sha256=notice_sha256,
            shown_policy=policy_version,
            user_agent=request.headers.get("user-agent"),
        )
    except FAILURES as exc:
        return await _failed(request, session, exc)
    return _back(token, "given")


@router.post("/p/{token}/transfer", include_in_schema=False)
async def give_transfer_consent(
    token: str,
    request: Request,
    session: SessionDep,
    csrf: FormText = "",
    recipient: FormText = "",
    notice_sha256: FormText = "",
    policy_version: FormText = "",
) -> Response:
    claims = await _form_claims(request, token, csrf)
    if isinstance(claims, Response):
        return claims
    try:
        await person.give_transfer(
            session,
            claims,
            request.app.state.settings,
            recipient=recipient,
            shown_sha256=notice_sha256,
            shown_policy=policy_version,
            user_agent=request.headers.get("user-agent"),
        )
    except FAILURES as exc:
        return await _failed(request, session, exc)
    return _back(token, "given")


@router.post("/p/{token}/opt-out", include_in_schema=False)
async def opt_out_of_marketing(
    token: str, request: Request, session: SessionDep, csrf: FormText = ""
) -> Response:
    claims = await _form_claims(request, token, csrf)
    if isinstance(claims, Response):
        return claims
    try:
        await person.opt_out_all(session, claims)
    except FAILURES as exc:
        return await _failed(request, session, exc)
    return _back(token, "optout")


@router.post("/p/{token}/request", include_in_schema=False)
async def start_rights_request(
    token: str,
    request: Request,
    session: SessionDep,
    csrf: FormText = "",
    type: FormText = "",
    details: FormText = "",
) -> Response:
    claims = await _form_claims(request, token, csrf)
    if isinstance(claims, Response):
        return claims
    try:
        await person.start_request(session, claims, type_=type, details=details)
    except FAILURES as exc:
        return await _failed(request, session, exc)
    return _back(token, "request")
