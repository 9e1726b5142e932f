"""RFC 9457 problem documents: the one shape every error takes."""

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("consent_api.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:consent-api:problem:"


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members vary by type."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class ProblemError(Exception):
    """A domain error that knows its HTTP status and problem type."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extra = extra


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "This API key's role may not do this"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class Unprocessable(ProblemError):
    status, slug, title = 422, "invalid-request", "The request is not valid"


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class ServiceUnavailable(ProblemError):
    status, slug, title = 503, "unavailable", "Service unavailable"


_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    500: ("internal-error", "Internal server error"),
}


def problem_response(
    status: int, slug: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Keep location, message and type; drop `input` and `ctx`, which may echo personal data."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    extra = [str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden" and e["loc"]]
    if extra:
        return "Field(s) not allowed: " + ", ".join(extra) + " (data minimisation)"
    parts = [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in errors[:5]]
    return "; ".join(parts)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.status, exc.slug, exc.title, exc.detail, **exc.extra)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_validation_errors(exc.errors())
    return problem_response(
        422,
        "validation-error",
        "Request validation failed",
        _validation_detail(errors),
        errors=errors,
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = (
        exc.detail if isinstance(exc.detail, str) and exc.detail.lower() != title.lower() else None
    )
    return problem_response(exc.status_code, slug, title, detail)


def _invalid_value() -> JSONResponse:
    return problem_response(
        422,
        "invalid-value",
        "A value cannot be stored",
        "A value is out of range or contains characters that cannot be stored.",
    )


async def _on_overflow(request: Request, exc: Exception) -> JSONResponse:
    return _invalid_value()


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """By SQLSTATE class, never the database's message: 22 (data exception: a NUL
    character, a number or date out of range) is the client's input; 23 (integrity) is a
    race the service's own checks could not see coming."""
    driver_error = exc if isinstance(exc, asyncpg.PostgresError) else getattr(exc, "orig", None)
    sqlstate = str(getattr(driver_error, "sqlstate", "") or "")
    if sqlstate.startswith("22"):
        return _invalid_value()
    if sqlstate.startswith("23"):
        return problem_response(
            409,
            "conflict",
            "Conflict with the current state",
            "A concurrent request changed the same data; retry.",
        )
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Only the exception class: messages and tracebacks may carry SQL or personal data.
    log.error("unhandled error", extra={"error_class": type(exc).__name__})
    return problem_response(500, "internal-error", "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(DBAPIError, _on_database_error)
    # Hot paths run on the driver connection (app.core.driver): its errors come unwrapped.
    app.add_exception_handler(asyncpg.PostgresError, _on_database_error)
    app.add_exception_handler(OverflowError, _on_overflow)
    app.add_exception_handler(Exception, _on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting the problem documents a route may return."""
    descriptions = {
        401: "Missing or invalid API key",
        403: "The key's role lacks the scope",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Request body too large",
        422: "Validation failed",
        503: "Database unavailable",
    }
    return {
        s: {
            "description": descriptions.get(s, "Error"),
            "model": Problem,
        }
        for s in statuses
    }
