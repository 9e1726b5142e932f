"""A polite HTTP client for the marketing tools: at most N connections at once, 429 and
5xx and dropped connections retried with exponential backoff and jitter (tenacity),
honouring `Retry-After`. Other answers are returned for the caller to judge."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

log = logging.getLogger("consent_api.sync")
MAX_BACKOFF = 60.0
MAX_RETRY_AFTER = 300.0


class RetryableStatus(Exception):
    """A 429 or 5xx answer, retried; carries the answer for `Retry-After`."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class RemoteUnavailable(Exception):
    """Retries exhausted: the batch stops here and is repeated on the next run."""


class RemoteRefused(Exception):
    """The remote refuses our credentials (401, 403): nothing can work until they change."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome else None
    if not isinstance(exc, RetryableStatus):
        return None
    value = exc.response.headers.get("retry-after")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER) if value is not None else None
    except ValueError:
        return None


class PoliteClient:
    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        headers: dict[str, str] | None = None,
        max_connections: int = 10,
        max_attempts: int = 8,
        backoff: float = 1.0,
        event_hooks: dict[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=auth,
            headers=headers,
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            event_hooks=event_hooks or {},
        )
        self.slots = asyncio.Semaphore(max_connections)
        self.max_attempts = max_attempts
        # Doubling from `backoff`, with full jitter, up to 64 times it (a minute at most).
        self.backoff = wait_random_exponential(
            multiplier=backoff, max=min(MAX_BACKOFF, backoff * 64)
        )
        self.retries = 0

    def _wait(self, state: RetryCallState) -> float:
        after = _retry_after(state)
        return after if after is not None else self.backoff(state)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.info(
            "remote call retried",
            extra={"attempt": state.attempt_number, "error_class": type(exc).__name__},
        )

    async def call(self, method: str, path: str, *, json: Any = None, **kw: Any) -> Answer:
        content = orjson.dumps(json) if json is not None else None
        headers = {"content-type": "application/json"} if content is not None else None
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((RetryableStatus, httpx.TransportError)),
                stop=stop_after_attempt(self.max_attempts),
                wait=self._wait,
                before_sleep=self._before_sleep,
                reraise=True,
            ):
                with attempt:
                    async with self.slots:
                        response = await self.client.request(
                            method, path, content=content, headers=headers, **kw
                        )
                    if response.status_code == 429 or response.status_code >= 500:
                        raise RetryableStatus(response)
        except (RetryableStatus, httpx.TransportError) as exc:
            raise RemoteUnavailable(f"{method} gave up after {self.max_attempts} tries") from exc
        if response.status_code in (401, 403):
            raise RemoteRefused(
                f"the remote refused our credentials (HTTP {response.status_code})",
                response.status_code,
            )
        try:
            body = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            body = None
        return Answer(response.status_code, body)

    async def aclose(self) -> None:
        await self.client.aclose()
