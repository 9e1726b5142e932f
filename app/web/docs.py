"""API docs that work offline: Swagger UI at /docs, loaded from files the app serves
itself (the `fastapi-offline` wheel ships them), never from a CDN; auditors often sit on
networks without internet. /redoc leads to /docs: ReDoc fetches its logo from its vendor's
CDN whatever its options. No API key: API.md leaves the docs open."""

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/static/docs"
# Our own corrections to Swagger UI's stylesheet (contrast), served with the auditor's
# stylesheet (app.web.auditor mounts the folder; the docs are linked from those pages).
A11Y_STYLESHEET = "/static/auditor/swagger-a11y.css"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        # Swagger UI would otherwise send the spec to an online validator. Deep links
        # would put a link inside each operation's button (nested controls, which screen
        # readers do not announce).
        swagger_ui_parameters={"validatorUrl": None, "deepLinking": False},
    )
    return _accessible(page, f"{root}{A11Y_STYLESHEET}")


def _accessible(page: Response, stylesheet: str) -> HTMLResponse:
    """FastAPI's Swagger UI page with a language (screen readers pick their voice by it),
    a main landmark, and our contrast corrections after Swagger UI's own stylesheet."""
    html = bytes(page.body).decode()
    html = html.replace("<html>", '<html lang="en-GB">', 1)
    html = html.replace("</head>", f'<link rel="stylesheet" href="{stylesheet}">\n</head>', 1)
    # Swagger UI draws into this element: as the page's main landmark, all of it is in one.
    html = html.replace('<div id="swagger-ui">\n    </div>', '<main id="swagger-ui"></main>', 1)
    return HTMLResponse(html, status_code=page.status_code)


@router.get("/redoc")
async def redoc() -> RedirectResponse:
    # ReDoc fetches its logo from its vendor's CDN whatever the options: one offline page.
    return RedirectResponse("/docs", status_code=307)


def install(app: FastAPI) -> None:
    """Serve the docs and their assets (the app must be built with docs_url=None)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    app.include_router(router)
