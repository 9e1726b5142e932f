"""The auditor's pages: the overview (`GET /v1/reports/overview`), the record of processing
activities as a page (`GET /v1/reports/processing-activities` with `Accept: text/html`),
and how a browser gets in: a signed link or a login form, either of which leaves an
HttpOnly, SameSite=Strict session cookie.

These routes authenticate themselves (a bearer key, or the session cookie), so this router
is included without the API's default bearer dependency. A cookie is honoured only while
its server-side record is live (app.services.access.page_sessions): logout ends it, and so does
`consent-api page-sessions revoke`. Failed sign-ins count with the API's failed
authentications (app.core.guard): past the limit, the login form answers 429 without
looking the key up. The cookies are `Secure` on an https request, and whenever
CONSENT_PUBLIC_BASE_URL is https (a TLS proxy that is not a trusted proxy makes the
request itself look like http). Pages are server-rendered with
Jinja2, with no JavaScript at all, and a strict Content-Security-Policy: nothing loads from
anywhere but this service.
"""

import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.core.auth import ROLE_SCOPES, Principal, authenticate
from app.core.db import SessionDep
from app.core.errors import Forbidden, Unauthorized, problem_responses
from app.core.guard import AUTH_THROTTLED, client_address
from app.core.signing import get_signer
from app.models.catalogue import Purpose
from app.services.access import api_keys, page_sessions
from app.services.catalogue import entries as catalogue
from app.services.reports import overview as overview_service
from app.services.reports import ropa
from app.web import filters
from app.web import session as pages
from app.web.charts import month_chart

WEB = Path(__file__).parent
templates = Environment(
    loader=FileSystemLoader(WEB / "templates"), autoescape=select_autoescape(["html"])
)
filters.install(templates)
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SCOPE = "reports:read"
OVERVIEW = "/v1/reports/overview"
router = APIRouter(tags=["reports"])


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = templates.get_template(f"auditor/{name}").render(**context)
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            # frame-ancestors says it to current browsers; this, to older ones.
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


def _wants_html(request: Request, *, default: bool) -> bool:
    accept = request.headers.get("accept", "")
    if "text/html" in accept:
        return True
    if "application/json" in accept:
        return False
    return default


class LoginNeeded(Exception):
    pass


async def _principal(request: Request, session: SessionDep) -> tuple[Principal, Any]:
    """A bearer key (API clients) or the page session cookie (browsers)."""
    if request.headers.get("authorization"):
        return await authenticate(request), None
    settings = request.app.state.settings
    found = pages.read_session(settings, request.cookies.get(pages.SESSION_COOKIE))
    if found is None:
        raise LoginNeeded
    # Its record: not ended (logout, revocation), expired nor idle; opened with an API key,
    # that key must still be unrevoked.
    live = await page_sessions.live(session, found.token)
    if live is None:
        raise LoginNeeded
    key_id = live.api_key_id or uuid.UUID(int=0)
    return Principal(key_id, live.name, live.role, ROLE_SCOPES[live.role]), found


async def _authorised(request: Request, session: SessionDep, *, html: bool) -> Any:
    """(principal, page session) or a redirect to the login form (browsers only)."""
    try:
        principal, found = await _principal(request, session)
    except LoginNeeded:
        if html:
            return RedirectResponse(f"/auditor/login?next={request.url.path}", status_code=303)
        raise Unauthorized("Send `Authorization: Bearer <api key>`.") from None
    if SCOPE not in principal.scopes:
        raise Forbidden(f"Role `{principal.role}` lacks the scope `{SCOPE}`.")
    return principal, found


HTML_OR_JSON = {
    200: {"content": {"application/json": {}, "text/html": {}}},
    **problem_responses(401, 403),
}


@router.get(OVERVIEW, responses=HTML_OR_JSON)
async def report_overview(request: Request, session: SessionDep) -> Response:
    """The auditor's overview page (HTML; `Accept: application/json` gives its numbers)."""
    html = _wants_html(request, default=True)
    auth = await _authorised(request, session, html=html)
    if isinstance(auth, Response):
        return auth
    settings = request.app.state.settings
    data = await overview_service.overview(session, get_signer(settings))
    if not html:
        return JSONResponse(data)
    consent = data["consent"]
    return render(
        "overview.html",
        data=data,
        chart=month_chart(consent["months"], consent["totals"]),
        purposes=await catalogue.descriptions(session, Purpose),
        who=auth[0],
        csrf=auth[1].csrf_token(settings) if auth[1] else None,
    )


@router.get("/v1/reports/processing-activities", responses=HTML_OR_JSON)
async def report_processing_activities(request: Request, session: SessionDep) -> Response:
    """Record of processing activities (Art 30(1)); `Accept: text/html` renders a page."""
    html = _wants_html(request, default=False)
    auth = await _authorised(request, session, html=html)
    if isinstance(auth, Response):
        return auth
    settings = request.app.state.settings
    record = await ropa.processing_activities(session, settings)
    if not html:
        return JSONResponse(record)
    csrf = auth[1].csrf_token(settings) if auth[1] else None
    # Keys the record lists by key, shown by their catalogue's words.
    purposes = {p["key"]: p["description"] for p in record["purposes"]}
    recipients = {r["key"]: r["name"] for r in record["recipients"]}
    return render(
        "ropa.html",
        record=record,
        purposes=purposes,
        recipients=recipients,
        who=auth[0],
        csrf=csrf,
    )


def _secure(request: Request) -> bool:
    """An https request, or a service published over https: behind a TLS proxy that is not
    listed in CONSENT_TRUSTED_PROXIES the request itself looks like plain http."""
    settings = request.app.state.settings
    return request.url.scheme == "https" or settings.public_base_url.startswith("https://")


async def _set_session(
    request: Request,
    response: Response,
    session: SessionDep,
    found: pages.PageSession,
    *,
    link_token: str | None = None,
) -> None:
    """Record the new session server-side, then hand its cookie to the browser."""
    await page_sessions.open_session(
        session,
        token=found.token,
        role=found.role,
        name=found.name,
        expires=datetime.fromtimestamp(found.expires, UTC),
        api_key_id=found.key_id,
        link_token=link_token,
    )
    response.set_cookie(
        pages.SESSION_COOKIE,
        found.token,
        max_age=request.app.state.settings.report_session_minutes * 60,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )


def _next(value: str | None) -> str:
    """Only our own report pages: never an open redirect."""
    return value if value and value.startswith("/v1/reports/") and "//" not in value else OVERVIEW


@router.get("/auditor/link/{token}", include_in_schema=False)
async def open_report_link(token: str, request: Request, session: SessionDep) -> Response:
    settings = request.app.state.settings
    payload = pages.verify(settings, token, "link")
    if payload is None:
        return _login_form(request, 401, "This link is not valid or has expired.")
    if await page_sessions.link_refused(session, token):
        return _login_form(request, 401, "This link has been revoked.")
    found = pages.issue_session(settings, role=payload["role"], name=payload["name"], key_id=None)
    # A page, not a redirect: a SameSite=Strict cookie set during a navigation that came
    # from another site (a mail client) would not ride along on the redirect.
    response = render("continue.html", target=OVERVIEW)
    await _set_session(request, response, session, found, link_token=token)
    return response


def _new_csrf() -> str:
    return secrets.token_urlsafe(24)


def _login_form(
    request: Request, status: int = 200, error: str | None = None, next_: str = OVERVIEW
) -> Response:
    csrf = _new_csrf()
    response = render("login.html", status=status, error=error, csrf=csrf, next=next_)
    response.set_cookie(
        pages.CSRF_COOKIE,
        csrf,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/auditor",
    )
    return response


@router.get("/auditor/login", include_in_schema=False)
async def login_form(request: Request, next: str | None = None) -> Response:
    return _login_form(request, next_=_next(next))


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(raw, max_num_fields=10).items()}


@router.post("/auditor/login", include_in_schema=False)
async def login(request: Request, session: SessionDep) -> Response:
    form = await _form(request)
    next_ = _next(form.get("next"))
    if not pages.same(form.get("csrf"), request.cookies.get(pages.CSRF_COOKIE)):
        return _login_form(request, 403, "The form expired; please sign in again.", next_)
    key = form.get("api_key", "").strip()
    row = await api_keys.find_live_key(session, key)
    if row is None:
        # Wrong keys count with the API's failed authentications, per client address; past
        # the limit a failure is a 429. A right key is served, as on the API (app.core.auth):
        # one person's typos never lock out a colleague behind the same address.
        limiter = request.app.state.auth_limiter
        client = client_address(request.scope)
        wait = limiter.retry_after(client)
        limiter.failed(client, "page_login")
        if wait:
            AUTH_THROTTLED.inc()
            message = "Too many failed sign-ins from this address; try again later."
            response = _login_form(request, 429, message, next_)
            response.headers["Retry-After"] = str(wait)
            return response
        return _login_form(request, 401, "The API key is unknown or revoked.", next_)
    if row.role not in pages.PAGE_ROLES:
        return _login_form(request, 403, "Only auditor and admin keys open these pages.", next_)
    found = pages.issue_session(
        request.app.state.settings, role=row.role, name=row.name, key_id=row.id
    )
    response = RedirectResponse(next_, status_code=303)
    await _set_session(request, response, session, found)
    _delete_cookie(request, response, pages.CSRF_COOKIE, "/auditor")
    return response


def _delete_cookie(request: Request, response: Response, name: str, path: str) -> None:
    response.delete_cookie(
        name, path=path, httponly=True, samesite="strict", secure=_secure(request)
    )


@router.post("/auditor/logout", include_in_schema=False)
async def logout(request: Request, session: SessionDep) -> Response:
    """Ends the session server-side: its cookie, replayed, no longer opens a page."""
    settings = request.app.state.settings
    form = await _form(request)
    found = pages.read_session(settings, request.cookies.get(pages.SESSION_COOKIE))
    if found is not None:
        if not pages.same(form.get("csrf"), found.csrf_token(settings)):
            raise Forbidden("The sign-out form did not come from this service.")
        await page_sessions.end(session, found.token)
    response = RedirectResponse("/auditor/login", status_code=303)
    _delete_cookie(request, response, pages.SESSION_COOKIE, "/")
    return response


def install(app: FastAPI) -> None:
    """The pages' stylesheet, and the routes (authenticating themselves)."""
    app.mount("/static/auditor", StaticFiles(directory=WEB / "static" / "auditor"), name="auditor")
    app.include_router(router)
