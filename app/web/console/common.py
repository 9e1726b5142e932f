"""What every console page shares: who is looking (a page session, or a bearer key for API
clients and tests), the CSRF check on every form, the templates and their headers.

A page decides nothing: whether a form is shown is whether the viewer's role holds the
scope the API route asks for (app.core.auth.ROLE_SCOPES), and a POST is refused (403) on
the same test before its body is read, so an auditor's session can read every page and
submit none. A cookie session must also send the form's CSRF token, bound to the session
(app.web.session.PageSession.csrf_token); a bearer key needs none (a browser never sends one
by itself).
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from app.core.auth import ROLE_SCOPES, Principal, authenticate
from app.core.db import SessionDep
from app.core.errors import Forbidden, ProblemError, Unauthorized
from app.services.access import page_sessions
from app.web import filters
from app.web import session as pages
from app.web.auditor import CSP

WEB = Path(__file__).resolve().parents[1]
templates = Environment(
    loader=FileSystemLoader(WEB / "templates"), autoescape=select_autoescape(["html"])
)
filters.install(templates)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_FIELDS = 80
T = TypeVar("T")


class SignInFirst(Exception):
    """A browser without a live session: sent to the sign-in form (app.web.console.auth)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    csrf: str | None  # None: a bearer key, which needs no CSRF token

    def can(self, scope: str) -> bool:
        return scope in self.principal.scopes


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "application/json" not in accept


async def current_viewer(request: Request, session: SessionDep) -> Viewer:
    """A bearer key, or the console's session cookie while its server-side row is live (not
    ended, expired nor idle, and its API key unrevoked: app.services.access.page_sessions)."""
    if request.headers.get("authorization"):
        principal = await authenticate(request)
        if principal.role not in pages.CONSOLE_ROLES:  # the website's or sync's key
            raise Forbidden(f"Role `{principal.role}` does not open the console.")
        return Viewer(principal, None)
    settings = request.app.state.settings
    cookie = request.cookies.get(pages.CONSOLE_SESSION_COOKIE)
    found = pages.read_session(settings, cookie, "console_session")
    live = await page_sessions.live(session, found.token) if found else None
    if found is None or live is None:
        if _wants_html(request):
            raise SignInFirst(request.url.path)
        raise Unauthorized("Sign in to the console, or send `Authorization: Bearer <api key>`.")
    key_id = live.api_key_id or uuid.UUID(int=0)
    principal = Principal(key_id, live.name, live.role, ROLE_SCOPES[live.role])
    return Viewer(principal, found.csrf_token(settings))


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def reader(scope: str) -> Callable[..., Awaitable[Viewer]]:
    """A page's dependency: the viewer, whose role reads `scope`."""

    async def dependency(viewer: ViewerDep) -> Viewer:
        if not viewer.can(scope):
            raise Forbidden(f"Role `{viewer.principal.role}` lacks the scope `{scope}`.")
        return viewer

    return dependency


@dataclass(frozen=True)
class Posted:
    viewer: Viewer
    form: dict[str, list[str]]

    def one(self, name: str) -> str | None:
        """A field's value, stripped; None when absent or blank."""
        value = (self.form.get(name) or [""])[0].strip()
        return value or None

    def many(self, name: str) -> list[str]:
        return [v.strip() for v in self.form.get(name, []) if v.strip()]


def writer(scope: str) -> Callable[..., Awaitable[Posted]]:
    """A form's dependency: the scope the API route asks for, checked before the body is
    read; then, for a cookie session, the form's CSRF token."""

    async def dependency(request: Request, viewer: ViewerDep) -> Posted:
        if not viewer.can(scope):
            raise Forbidden(f"Role `{viewer.principal.role}` lacks the scope `{scope}`.")
        raw = (await request.body()).decode("utf-8", errors="replace")
        form = parse_qs(raw, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        if viewer.csrf is not None and not pages.same((form.get("csrf") or [""])[0], viewer.csrf):
            raise Forbidden("The form did not come from this console (or it expired).")
        return Posted(viewer, form)

    return dependency


def render(name: str, viewer: Viewer | None, status: int = 200, **context: Any) -> HTMLResponse:
    body = templates.get_template(f"console/{name}").render(viewer=viewer, **context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def problem_text(exc: ProblemError | ValidationError) -> str:
    """What a refused form says: the service's own words, or the model's checks."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
        )
    return exc.detail or str(exc)


async def attempt(
    session: Any, action: Callable[[], Awaitable[T]]
) -> tuple[T | None, str | None, int]:
    """Run a service call in a savepoint: (result, None, 200), or (None, why, status) with
    nothing of it kept when the service or the model refuses it."""
    try:
        async with session.begin_nested():
            return await action(), None, 200
    except ValidationError as exc:
        return None, problem_text(exc), 422
    except ProblemError as exc:
        return None, problem_text(exc), exc.status
