"""RFC 9457 problem documents: the one shape every error takes."""

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
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

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
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


class TooManyRequests(ProblemError):
    status, slug, title = 429, "too-many-requests", "Too many failed authentications"


# issue 14: SQLSTATEs that mean "the database is unavailable or overloaded right now", not
# "this request is wrong": 08 connection exceptions, 53 insufficient resources,
# 57014 statement timeout (query_canceled), 57P01-57P05 shutdown / cannot connect now,
# 55P03 lock_not_available, 40001/40P01 serialisation failure and deadlock (safe to retry).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57014", "57P", "55P03", "40001", "40P01")
RETRY_AFTER_SECONDS = 5  # replaced by the setting when the app is built


_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


def problem_response(
    status: int, slug: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status in (429, 503):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def unavailable_response() -> JSONResponse:
    return problem_response(
        503,
        "unavailable",
        "Service unavailable",
        "The database is unavailable or busy; nothing was stored. Retry after the delay "
        "given in Retry-After (with the same Idempotency-Key for a write).",
    )


def is_unavailable(exc: BaseException) -> bool:
    """A lost, refused, timed-out or exhausted database connection (never the client's fault)."""
    if isinstance(exc, PoolTimeoutError | TimeoutError | ConnectionError):
        return True
    # The hot paths' own driver (app.core.driver): its errors arrive unwrapped.
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.ConnectionFailureError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "").startswith(_UNAVAILABLE_SQLSTATES)
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        sqlstate = str(getattr(orig, "sqlstate", "") or "")
        if sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        # asyncpg's own errors, wrapped by SQLAlchemy's adapter: the cause is the real one.
        cause = getattr(orig, "__cause__", None) or orig
        return isinstance(cause, TimeoutError | OSError) or type(cause).__name__ in {
            "ConnectionDoesNotExistError",
            "InterfaceError",
            "InternalClientError",
            "ConnectionFailureError",
            "CannotConnectNowError",
        }
    return isinstance(exc, OSError)


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Keep location, message and type; drop `input` and `ctx`, which may echo personal data."""
    return [
        {
            "loc": [p[:64] if isinstance(p, str) else p for p in e.get("loc", ())],
            "msg": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in errors
    ]


MAX_REPORTED_ERRORS = 20  # issue 14: 100,000 unknown keys made a 9 MB problem document


def not_json_detail(doc: str, pos: int) -> str:
    """Where a body stops being JSON, by line and column (1-based, in characters), the same
    whichever parser found it (the json module and orjson agree on positions, not on their
    messages, which stay out)."""
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    return f"The body is not valid JSON at line {line}, column {column}."


def _json_invalid_detail(exc: RequestValidationError, errors: list[dict[str, Any]]) -> str | None:
    """FastAPI's json_invalid error carries the character offset; the decoded body is the
    exception's `body` (never echoed: only the position)."""
    if len(errors) != 1 or errors[0]["type"] != "json_invalid":
        return None
    loc = errors[0]["loc"]
    if not isinstance(exc.body, str) or len(loc) != 2 or not isinstance(loc[1], int):
        return "The body is not valid JSON."
    return not_json_detail(exc.body, loc[1])


def _validation_detail(errors: list[dict[str, Any]], total: int | None = None) -> str:
    extra = [str(e["loc"][-1])[:64] for e in errors if e["type"] == "extra_forbidden" and e["loc"]]
    if extra:
        more = (total or len(errors)) - len(errors)
        tail = f" and {more} more" if more > 0 else ""
        return "Field(s) not allowed: " + ", ".join(extra) + tail + " (data minimisation)"
    parts = [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in errors[:5]]
    return "; ".join(parts)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    response = problem_response(exc.status, exc.slug, exc.title, exc.detail, **exc.extra)
    response.headers.update(exc.headers)
    return response


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    all_errors = exc.errors()
    errors = _clean_validation_errors(all_errors[:MAX_REPORTED_ERRORS])
    extra: dict[str, Any] = {"errors": errors}
    if len(all_errors) > MAX_REPORTED_ERRORS:
        extra["errors_total"] = len(all_errors)
    detail = _json_invalid_detail(exc, errors) or _validation_detail(errors, len(all_errors))
    return problem_response(422, "validation-error", "Request validation failed", detail, **extra)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = (
        exc.detail if isinstance(exc.detail, str) and exc.detail.lower() != title.lower() else None
    )
    response = problem_response(exc.status_code, slug, title, detail)
    for name, value in (exc.headers or {}).items():  # e.g. a 405's Allow
        response.headers[name] = value
    return response


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
    if sqlstate in ("40001", "40P01"):  # lost a race: app.core.retry runs it again
        from app.core.retry import mark_retryable

        mark_retryable(request.scope)
    if is_unavailable(exc):
        return unavailable_response()
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


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", extra={"error_class": type(exc).__name__})
    return unavailable_response()


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_unavailable(exc):
        return await _on_unavailable(request, exc)
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
    app.add_exception_handler(PoolTimeoutError, _on_unavailable)
    app.add_exception_handler(TimeoutError, _on_unavailable)
    app.add_exception_handler(ConnectionError, _on_unavailable)
    app.add_exception_handler(asyncpg.InterfaceError, _on_unavailable)
    app.add_exception_handler(Exception, _on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting the problem documents a route may return."""
    descriptions = {
        401: "Missing or invalid API key",
        403: "The key's role lacks the scope",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Request body too large",
        415: "Unsupported media type",
        422: "Validation failed",
        429: "Too many failed authentications; retry after Retry-After seconds",
        503: "Database unavailable",
    }
    return {
        s: {
            "description": descriptions.get(s, "Error"),
            "model": Problem,
        }
        for s in statuses
    }


_COMMON_PROBLEMS = {
    "400": "The body cannot be decoded (e.g. not UTF-8); malformed JSON is a 422",
    "415": "Unsupported media type: send application/json",
    "429": "Too many failed authentications from this client; retry after Retry-After",
    "503": "Database unavailable or busy; retry after Retry-After",
}


def document_common_problems(spec: dict[str, Any]) -> None:
    """Problems any operation may answer, whatever its handler (issue 14): the HTTP layer's
    400 and 415 for operations with a body, 429 for keyed ones, 503 for all but /healthz."""
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, methods in spec.get("paths", {}).items():
        for op in methods.values():
            responses = op.setdefault("responses", {})
            codes = []
            if "requestBody" in op:
                codes += ["400", "415"]
            if "401" in responses:
                codes.append("429")
            if path != "/healthz":
                codes.append("503")
            for code in codes:
                responses.setdefault(
                    code,
                    {
                        "description": _COMMON_PROBLEMS[code],
                        "content": {PROBLEM_MEDIA_TYPE: {"schema": ref}},
                    },
                )
