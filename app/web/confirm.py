"""`/c/{token}`: the person confirms what the service e-mailed them about (a double opt-in,
or a rights request started from the preference page). Like the other person pages: no API
key (the signed token is the credential), no script, a signed anti-forgery value in the
form, the same security headers, and a plain page that changes nothing for a link that is
tampered with, expired or no longer applies. The GET changes nothing (mail scanners open
links); only the button's POST confirms."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.core.config import Settings
from app.core.db import SessionDep
from app.core.link_tokens import (
    ExpiredToken,
    InvalidToken,
    LinkClaims,
    check_form_token,
    form_token,
    token_fingerprint,
    verify_link,
)
from app.services.person import confirmations
from app.web.person import FAILURES, HTML_ERRORS, FormText, _failed, _limiter, _render, error_page

router = APIRouter(tags=["person pages"])


async def _claims(request: Request, token: str) -> LinkClaims | Response:
    """A confirmation link's claims (a double opt-in's or a rights request's), or the plain
    error page to answer with."""
    if not _limiter(request).allow(token_fingerprint(token)):
        return await error_page(request, 429)
    settings: Settings = request.app.state.settings
    for kind in ("c", "r"):
        try:
            claims = verify_link(settings, token, kind=kind)  # type: ignore[arg-type]
        except ExpiredToken:
            return await error_page(request, 410)
        except InvalidToken:
            continue
        if claims.ref is not None:
            return claims
    return await error_page(request, 404)


def _client_ip(request: Request) -> str | None:
    # The peer as uvicorn saw it (behind a proxy, its --forwarded-allow-ips decides).
    return request.client.host if request.client else None


@router.get("/c/{token}", response_class=HTMLResponse, responses=HTML_ERRORS)
async def confirmation_page(token: str, request: Request, session: SessionDep) -> Response:
    """What the link confirms, and one button; changes nothing."""
    claims = await _claims(request, token)
    if isinstance(claims, Response):
        return claims
    try:
        shown = await confirmations.shown(session, claims)
    except FAILURES as exc:
        return await _failed(request, session, exc)
    return await _render(
        request,
        "person/confirm.html",
        session=session,
        token=token,
        csrf=form_token(request.app.state.settings, token),
        shown=shown,
    )


@router.post("/c/{token}", response_class=HTMLResponse, responses=HTML_ERRORS)
async def confirm(
    token: str, request: Request, session: SessionDep, csrf: FormText = ""
) -> Response:
    """Confirm: the pending consent becomes a consent (with the confirmation's evidence), or
    the rights request's identity is verified (method `email_link`)."""
    claims = await _claims(request, token)
    if isinstance(claims, Response):
        return claims
    settings: Settings = request.app.state.settings
    cross_site = request.headers.get("sec-fetch-site") == "cross-site"
    if cross_site or not check_form_token(settings, token, csrf):
        return await error_page(request, 403, session)
    try:
        if claims.kind == "c":
            await confirmations.confirm_consent(
                session,
                settings,
                claims,
                user_agent=request.headers.get("user-agent"),
                ip=_client_ip(request),
            )
        else:
            await confirmations.confirm_request(session, claims)
        shown = await confirmations.shown(session, claims)
    except FAILURES as exc:
        return await _failed(request, session, exc)
    return await _render(request, "person/confirmed.html", session=session, shown=shown)
