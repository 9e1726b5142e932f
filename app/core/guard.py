"""The request guard (issue 14), pure ASGI, before any body is read:

- a keyed path without a well-formed `Authorization: Bearer cak_...` is a 401 at once (an
  anonymous 1 MB body is never parsed), and every failed authentication is counted in
  `/metrics` and per client address; past `auth_failures_allowed` in the window, a failing
  request gets 429 with Retry-After (per process: no shared store needed), while a request
  with a valid key is still served (app.core.auth: the throttle refuses failures only);
- request heads over `http_max_header_bytes` are a 431 (app.core.http_protocol bounds
  what it buffers);
- a body of a media type the API does not read is a 415;
- every answer says `X-Content-Type-Options: nosniff`, and `Cache-Control: no-store`
  unless the handler chose otherwise (answers carry personal data).
"""

import time
from collections import OrderedDict, deque

from prometheus_client import Counter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_response

AUTH_FAILURES = Counter("consent_api_auth_failures_total", "Failed authentications", ["reason"])
AUTH_THROTTLED = Counter(
    "consent_api_auth_throttled_total", "Requests refused with 429 after repeated failures"
)
KEY_PREFIX = b"bearer cak_"
# Paths that need no key (API.md): operations, docs, the webhook, the person's own pages.
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/u/", "/p/",
                   "/c/", "/v1/webhooks/", "/auditor/", "/static/", "/console/")  # fmt: skip
# Exact paths that need no key: the public signing keys (app.routers.keys). Exact, not
# prefixes: `/v1/keys/...` or `/v1/keysX` stays keyed.
PUBLIC_PATHS = frozenset({"/v1/keys", "/.well-known/jwks.json"})
# The auditor's pages take a bearer key or a page-session cookie (a browser cannot send a
# header from the address bar): they check either themselves (app.web.auditor).
SELF_AUTHENTICATING = frozenset({"/v1/reports/overview", "/v1/reports/processing-activities"})
# The person's pages read HTML forms; RFC 8058 one-click POSTs may come as multipart.
# The console (app.web.console) authenticates itself too (a bearer key or its cookie).
FORM_PREFIXES = ("/u/", "/p/", "/c/", "/auditor/", "/console/")
FORM_MEDIA_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")
# Media types a body may have; others are 415. Bulk import reads NDJSON and CSV.
BODY_MEDIA_TYPES = (b"application/json", b"application/x-ndjson", b"application/ndjson",
                    b"text/csv", b"application/x-www-form-urlencoded")  # fmt: skip
MAX_TRACKED_CLIENTS = 10_000
TOO_MANY_DETAIL = "Too many requests with a missing or invalid API key from this address."


class FailedAuthLimiter:
    """Failed authentications per client address in a sliding window."""

    def __init__(self, allowed: int, window: float) -> None:
        self.allowed = allowed
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait, or 0 when it may try."""
        now = time.monotonic()
        times = self._recent(client, now)
        if len(times) < self.allowed:
            return 0
        return max(1, int(times[0] + self.window - now) + 1)

    def failed(self, client: str, reason: str) -> None:
        AUTH_FAILURES.labels(reason).inc()
        now = time.monotonic()
        times = self._recent(client, now)
        times.append(now)
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_TRACKED_CLIENTS:
            self._failures.popitem(last=False)


def client_address(scope: Scope) -> str:
    # uvicorn puts the X-Forwarded-For address here only for trusted proxies (setting).
    client = scope.get("client")
    return str(client[0]) if client else "-"


def is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PREFIXES) or path in PUBLIC_PATHS or path in SELF_AUTHENTICATING


class RequestGuardMiddleware:
    def __init__(
        self, app: ASGIApp, limiter: FailedAuthLimiter, max_header_bytes: int = 16 * 1024
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        path: str = scope.get("path", "")
        raw_headers = scope.get("headers") or []
        if sum(len(k) + len(v) + 4 for k, v in raw_headers) > self.max_header_bytes:
            await _headers_too_large(self.max_header_bytes)(scope, receive, send)
            return
        headers = dict(raw_headers)
        if not is_public(path) and not (
            headers.get(b"authorization", b"").lower().startswith(KEY_PREFIX)
        ):
            # No key at all: refused here. A well-formed key is looked up before the body is
            # read (app.core.auth_first), and a valid one is served even from an address
            # that has failed many times (the throttle refuses failures only).
            await self._no_key(scope)(scope, receive, send)
            return
        content_type = headers.get(b"content-type")
        if content_type is not None and _has_body(headers):
            media_type = content_type.split(b";")[0].strip().lower()
            form = path.startswith(FORM_PREFIXES) and media_type in FORM_MEDIA_TYPES
            if not (form or media_type in BODY_MEDIA_TYPES or media_type.endswith(b"+json")):
                await _unsupported_media_type()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _no_key(self, scope: Scope) -> Response:
        """A request without a key, counted as a failure of its address: 401, or 429 with
        Retry-After once the address is over its allowance."""
        client = client_address(scope)
        wait = self.limiter.retry_after(client)
        self.limiter.failed(client, "missing_or_malformed")
        if wait:
            AUTH_THROTTLED.inc()
            response = problem_response(
                429, "too-many-requests", "Too many failed authentications", TOO_MANY_DETAIL
            )
            response.headers["Retry-After"] = str(wait)
            return response
        return problem_response(
            401,
            "unauthorized",
            "Missing or invalid API key",
            "Send `Authorization: Bearer <api key>`.",
        )


def _headers_too_large(max_header_bytes: int) -> Response:
    return problem_response(
        431,
        "headers-too-large",
        "Request header fields too large",
        f"The limit is {max_header_bytes} bytes of headers.",
    )


def _unsupported_media_type() -> Response:
    return problem_response(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        "Send the body as application/json.",
    )


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    return (length is not None and length != b"0") or b"transfer-encoding" in headers


def _with_security_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {k.lower() for k, _ in headers}
            # Once: a page that sets its own security headers must not get a second copy.
            if b"x-content-type-options" not in names:
                headers.append((b"x-content-type-options", b"nosniff"))
            if b"cache-control" not in names:
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped
