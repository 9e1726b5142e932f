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

from app.core.error_chain import describe as describe_chain
from app.core.error_chain import type_name
from app.core.outage import Outage, classify, exception_links, is_unavailable

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


# What a 503 says became of the request (app.core.outage): where nothing was sent, nothing
# was stored; where a statement may have reached the database, the write may be stored, and
# only the same Idempotency-Key makes the retry safe. `write_outcome` says it for programs.
_RETRY = " Retry after the delay given in Retry-After (with the same Idempotency-Key for a write)."
_RETRY_SAME_KEY = (
    " A retry after the delay given in Retry-After with the same Idempotency-Key is safe: the"
    " write is stored at most once. Without a key, check before writing again."
)
_OUTAGE_DETAIL = {
    Outage.UNREACHABLE: "The database cannot be reached right now; nothing was stored.",
    Outage.EXHAUSTED: "Every database connection is in use; nothing was stored.",
    Outage.BUSY: "The database refused the change for now and undid it; nothing was stored.",
    Outage.LOST: "The connection to the database was lost while the request ran: a write "
    "may have been stored.",
    Outage.TIMED_OUT: "The database did not answer in time while the request ran: a write "
    "may have been stored.",
    Outage.CANCELLED: "The database cancelled a statement while the request ran: a write "
    "may have been stored.",
}


def unavailable_response(outage: Outage | None = None) -> JSONResponse:
    """The 503 for a database outage. Without a kind, the cautious text: maybe stored."""
    kind = outage or Outage.LOST
    return problem_response(
        503,
        "unavailable",
        "Service unavailable",
        _OUTAGE_DETAIL[kind] + (_RETRY_SAME_KEY if kind.maybe_stored else _RETRY),
        write_outcome="unknown" if kind.maybe_stored else "not_stored",
    )


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
        return answer_exception(exc)
    if sqlstate.startswith("22"):
        return _invalid_value()
    if sqlstate.startswith("23"):
        return problem_response(
            409,
            "conflict",
            "Conflict with the current state",
            "A concurrent request changed the same data; retry.",
        )
    return answer_exception(exc)


def answer_exception(exc: BaseException) -> JSONResponse:
    """The answer to an exception no other handler took (also the last resort of
    app.core.observability): a 503 for a database outage of any kind, otherwise a 500 whose
    log line carries the exception chain with its frames, never a message (which may hold
    SQL or personal data); the response carries neither."""
    outage = classify(exc)
    if outage is not None:
        log.warning(
            "database unavailable",
            extra={
                "error_class": type(exc).__name__,
                "outage": outage.value,
                "error_types": [type_name(e) for e in exception_links(exc, into_groups=True)],
            },
        )
        return unavailable_response(outage)
    log.error(
        "unhandled error",
        extra={"error_class": type(exc).__name__, "error_chain": describe_chain(exc)},
    )
    return problem_response(500, "internal-error", "Internal server error")


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return answer_exception(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(DBAPIError, _on_database_error)
    # Hot paths run on the driver connection (app.core.driver): its errors come unwrapped.
    app.add_exception_handler(asyncpg.PostgresError, _on_database_error)
    app.add_exception_handler(OverflowError, _on_overflow)
    # Outages of every kind and what may wrap them (app.core.outage decides, else a 500):
    # handled here, inside the middleware, like any other problem.
    for outage_class in (
        PoolTimeoutError,
        OSError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        ExceptionGroup,
    ):
        app.add_exception_handler(outage_class, _on_unexpected)
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
