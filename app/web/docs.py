"""API docs that work offline: Swagger UI at /docs, loaded from files the app serves
itself (the `fastapi-offline` wheel ships them), never from a CDN; auditors often sit on
networks without internet. /redoc leads to /docs: ReDoc fetches its logo from its vendor's
CDN whatever its options. No API key: API.md leaves the docs open."""

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/static/docs"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        # Swagger UI would otherwise send the spec to an online validator.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
async def redoc() -> RedirectResponse:
    # ReDoc fetches its logo from its vendor's CDN whatever the options: one offline page.
    return RedirectResponse("/docs", status_code=307)


def install(app: FastAPI) -> None:
    """Serve the docs and their assets (the app must be built with docs_url=None)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    app.include_router(router)
