"""The privacy team's console under /console/: server-rendered pages, no JavaScript, the
auditor pages' strict CSP, for crm and admin keys (an auditor key reads, never writes).

Each page is thin: it reads through the services and posts through the very service
function the API route calls (one write path per fact); nothing here decides.
"""

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from app.web.console import auth, catalogues, deliveries, rights, subjects
from app.web.console.common import WEB, SignInFirst

ROUTERS = (auth.router, rights.router, subjects.router, catalogues.router, deliveries.router)


async def _sign_in_first(request: Request, exc: Exception) -> Response:
    target = exc.path if isinstance(exc, SignInFirst) else auth.HOME
    return RedirectResponse(f"/console/login?next={auth._next(target)}", status_code=303)


def install(app: FastAPI) -> None:
    """The console's stylesheet and routes (authenticating themselves, as the auditor's)."""
    app.mount("/static/console", StaticFiles(directory=WEB / "static" / "console"), name="console")
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(SignInFirst, _sign_in_first)
