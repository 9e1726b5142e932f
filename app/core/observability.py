"""Request ids, JSON logs, Prometheus metrics and the body-size limit (pure ASGI, no buffering)."""

import itertools
import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Settings, use_settings
from app.core.errors import answer_exception, problem_response

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
access_log = logging.getLogger("consent_api.access")

REQUESTS = Counter(
    "consent_api_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
LATENCY = Histogram(
    "consent_api_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}
_base_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # Stamp the request id when the record is made, whichever handler formats it later.
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id_var.get()
    return record


logging.setLogRecordFactory(_record_factory)


_TRACEBACK = "Traceback (most recent call last):"
_RAISED = re.compile(r"[A-Za-z_][\w.]*(?=:|$)")


def _raised_class(traceback_text: str) -> str:
    """The class a formatted traceback ends with: the first unindented line after its last
    `Traceback` header (`asyncpg.exceptions.FooError: detail`, whose detail may run over
    lines) -> `FooError`; anything else (exception groups' `|` lines) -> `Exception`."""
    lines = traceback_text.splitlines()
    last = max(i for i, line in enumerate(lines) if _TRACEBACK in line)
    for line in lines[last + 1 :]:
        if line and not line[0].isspace():
            raised = _RAISED.match(line)
            return raised[0].rsplit(".", 1)[-1] if raised else "Exception"
    return "Exception"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields are passed through, exceptions by class only."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if _TRACEBACK in out["msg"]:
            # A traceback passed as the message (uvicorn logs a failed start-up so): its
            # frames and its last line (SQL, values) stay out; the class is what was raised.
            out["error_class"] = _raised_class(out["msg"])
            out["msg"] = "unhandled exception (traceback withheld)"
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["error_class"] = record.exc_info[0].__name__
        return json.dumps(out, default=str)


_WORKER_DIED = re.compile(r"Child process \[\d+\] died")


class _WorkerLifecycle(logging.Filter):
    """On the root handler: uvicorn's "Child process [pid] died" (INFO) is raised to a
    warning, or to the configured level if that is higher, so that an operator sees it;
    uvicorn's other records below the configured level are dropped, as before."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("uvicorn"):
            return True
        if record.levelno < logging.WARNING and _WORKER_DIED.match(str(record.msg)):
            level = max(logging.WARNING, self.level)
            record.levelno, record.levelname = level, logging.getLevelName(level)
        return record.levelno >= self.level


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn reports a worker's death at INFO: let its records reach the handler, whose
    # filter keeps that one (as a warning) and drops the rest below the level.
    logging.getLogger("uvicorn.error").setLevel(min(root.level, logging.INFO))
    handler.addFilter(_WorkerLifecycle(root.level))
    # httpx logs full URLs (query strings may hold e-mails) at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn's access log prints raw paths with query strings (e-mails): never enable it.
    logging.getLogger("uvicorn.access").disabled = True


_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def _new_request_id() -> str:
    # Unique across processes by the random prefix; no urandom system call per request.
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestContextMiddleware:
    """Request id, access log line, metrics by route template, and a last-resort 500 problem."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        use_settings(self.settings)  # what the services read: the app's own settings
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else _new_request_id()
        token = request_id_var.set(request_id)
        status = 500
        started = False
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # What escaped the app's handlers (a middleware's own call, an error class no
            # handler names): a 503 for an outage, else a 500 logged with its frames.
            response = answer_exception(exc)
            if not started:
                await response(scope, receive, send_wrapper)
        finally:
            _count_and_log(scope, status, time.perf_counter() - t0)
            request_id_var.reset(token)


def _count_and_log(scope: Scope, status: int, elapsed: float) -> None:
    """The request's metrics (by route template) and its access log line."""
    route = _route_template(scope)
    method = scope["method"]
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(elapsed)
    access_log.info(
        "request",
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
        },
    )


class BodySizeLimitMiddleware:
    """413 for bodies over the limit, by Content-Length or by counting a streamed body.
    `path_limits` gives some paths (bulk import) their own limit."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope.get("path", ""), self.default_max_bytes)
        length = dict(scope.get("headers") or []).get(b"content-length")

        def too_large() -> Any:  # built only when needed: not on every request
            return problem_response(
                413,
                "payload-too-large",
                "Request body too large",
                f"The limit is {max_bytes} bytes.",
            )

        if length is not None and length.isdigit() and int(length) > max_bytes:
            await too_large()(scope, receive, send)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await too_large()(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """An HTTPException so FastAPI's body parser re-raises it as 413 rather than a 400."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


class JsonBodyMiddleware:
    """Read bodies sent as `application/x-www-form-urlencoded` (curl -d's default) to a JSON
    API path as JSON. The MailChimp webhook, which really is form-encoded, is left alone."""

    FORM = b"application/x-www-form-urlencoded"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] == "http"
            and path.startswith("/v1/")
            and not path.startswith("/v1/webhooks/")
        ):
            headers = scope.get("headers") or []
            if any(k == b"content-type" and v.startswith(self.FORM) for k, v in headers):
                scope = dict(scope)
                scope["headers"] = [
                    (k, b"application/json" if k == b"content-type" else v) for k, v in headers
                ]
        await self.app(scope, receive, send)
