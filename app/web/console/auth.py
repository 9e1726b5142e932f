"""Signing in to the console: the login form (an API key of a console role) or a signed
link from `consent-api console-link --key NAME`. Either opens a session recorded
server-side (app.services.access.page_sessions) under the API key it stands for, so that
revoking the key ends it; a link's sessions also remember the link, so revoking one of
them (`consent-api page-sessions revoke`) refuses the link too. The cookie is HttpOnly,
SameSite=Strict, scoped to /console, and Secure whenever the service is reached over https.
Failed sign-ins count with the API's failed authentications (app.core.guard), as on the
auditor's login form.
"""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.core.db import SessionDep
from app.core.errors import Forbidden
from app.core.guard import AUTH_THROTTLED, client_address
from app.services.access import api_keys, page_sessions
from app.web import session as pages
from app.web.auditor import _form, _new_csrf, _secure
from app.web.console.common import ViewerDep, render

HOME = "/console/"
PATH = "/console"
router = APIRouter(include_in_schema=False)


def _next(value: str | None) -> str:
    """Only the console's own pages: never an open redirect."""
    ok = value and value.startswith(HOME) and "//" not in value and "\\" not in value
    return value if ok else HOME  # type: ignore[return-value]


def login_page(request: Request, status: int = 200, error: str | None = None,
               next_: str = HOME) -> Response:  # fmt: skip
    csrf = _new_csrf()
    response = render("login.html", None, status, error=error, csrf=csrf, next=next_)
    response.set_cookie(pages.CONSOLE_CSRF_COOKIE, csrf, max_age=3600, httponly=True,
                        samesite="strict", secure=_secure(request), path=PATH)  # fmt: skip
    return response


async def _open(
    request: Request, response: Response, session: SessionDep, row: Any, link: str | None
) -> None:
    """Record the session under its API key, then hand the browser its cookie."""
    settings = request.app.state.settings
    found = pages.issue_session(
        settings, role=row.role, name=row.name, key_id=row.id, kind="console_session"
    )
    await page_sessions.open_session(
        session,
        token=found.token,
        role=found.role,
        name=found.name,
        expires=datetime.fromtimestamp(found.expires, UTC),
        api_key_id=row.id,
        link_token=link,
    )
    response.set_cookie(
        pages.CONSOLE_SESSION_COOKIE,
        found.token,
        max_age=settings.report_session_minutes * 60,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=PATH,
    )


@router.get("/console/login")
async def console_login_form(request: Request, next: str | None = None) -> Response:
    return login_page(request, next_=_next(next))


def _throttled(request: Request, next_: str) -> Response:
    """A wrong key, counted with the API's failures from this address (429 past the limit)."""
    limiter = request.app.state.auth_limiter
    client = client_address(request.scope)
    wait = limiter.retry_after(client)
    limiter.failed(client, "console_login")
    if not wait:
        return login_page(request, 401, "The API key is unknown or revoked.", next_)
    AUTH_THROTTLED.inc()
    response = login_page(request, 429, "Too many failed sign-ins; try again later.", next_)
    response.headers["Retry-After"] = str(wait)
    return response


@router.post("/console/login")
async def console_login(request: Request, session: SessionDep) -> Response:
    form = await _form(request)
    next_ = _next(form.get("next"))
    if not pages.same(form.get("csrf"), request.cookies.get(pages.CONSOLE_CSRF_COOKIE)):
        return login_page(request, 403, "The form expired; please sign in again.", next_)
    row = await api_keys.find_live_key(session, form.get("api_key", "").strip())
    if row is None:
        return _throttled(request, next_)
    if row.role not in pages.CONSOLE_ROLES:
        return login_page(request, 403, "Only crm, admin and auditor keys open the console.")
    response = RedirectResponse(next_, status_code=303)
    await _open(request, response, session, row, None)
    response.delete_cookie(pages.CONSOLE_CSRF_COOKIE, path=PATH, httponly=True,
                           samesite="strict", secure=_secure(request))  # fmt: skip
    return response


@router.get("/console/link/{token}")
async def console_link(token: str, request: Request, session: SessionDep) -> Response:
    payload = pages.verify(request.app.state.settings, token, "console_link")
    if payload is None:
        return login_page(request, 401, "This link is not valid or has expired.")
    row = await api_keys.find_live_key_by_id(session, payload["key_id"])
    if row is None or await page_sessions.link_refused(session, token):
        return login_page(request, 401, "This link has been revoked.")
    # A page, not a redirect: a SameSite=Strict cookie set during a navigation from another
    # site (a mail client) would not ride along on the redirect.
    response = render("continue.html", None, target=HOME)
    await _open(request, response, session, row, token)
    return response


@router.post("/console/logout")
async def console_logout(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """Ends the session server-side: its cookie, replayed, no longer opens a page."""
    form = await _form(request)
    if viewer.csrf is not None:
        if not pages.same(form.get("csrf"), viewer.csrf):
            raise Forbidden("The sign-out form did not come from this console.")
        await page_sessions.end(session, request.cookies[pages.CONSOLE_SESSION_COOKIE])
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(pages.CONSOLE_SESSION_COOKIE, path=PATH, httponly=True,
                           samesite="strict", secure=_secure(request))  # fmt: skip
    return response
