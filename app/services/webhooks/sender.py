"""The HTTP side of a webhook: the Standard Webhooks message (`webhook-id`,
`webhook-timestamp`, `webhook-signature`, body `{id, type, timestamp, data}`), sent to the
address checked by app.services.webhooks.addresses, redirects never followed. How many
run at once is the worker's business. No database here."""

import asyncio
import ssl
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from app.core.config import Settings
from app.services.webhooks import addresses, http1
from app.services.webhooks.deliveries import Claimed, Outcome
from app.services.webhooks.endpoints import Signing

USER_AGENT = "consent-api-webhooks/1"
ERROR_BODY_CHARS = 200


def message(msg_id: str, kind: str, at: datetime, data: dict[str, Any]) -> bytes:
    """The body, in the feed's own JSON (RFC 3339 UTC times)."""
    return orjson.dumps(
        {"id": msg_id, "type": kind, "timestamp": at, "data": data},
        option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC,
    )


def headers(msg_id: str, body: bytes, secrets: Sequence[str], sent: datetime) -> dict[str, str]:
    """Standard Webhooks headers; one `v1,` signature per secret that signs now."""
    signatures = " ".join(Webhook(s).sign(msg_id, sent, body) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class Sender:
    """Connections per endpoint, each to an address checked for the call that opened it."""

    def __init__(self, settings: Settings, resolve: addresses.Resolver | None = None) -> None:
        self.settings = settings
        self.resolve = resolve or addresses.system_resolver
        self._pools: dict[str, http1.Pool] = {}

    def _pool(self, key: str) -> http1.Pool:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = http1.Pool()
        return pool

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    async def post(self, endpoint: Signing, msg_id: str, body: bytes) -> tuple[int | None, str]:
        """(status or None, the answer's first characters or why there was none)."""
        try:
            target = await addresses.target(
                endpoint.url,
                development=self.settings.env == "development",
                resolve=self.resolve,
            )
        except addresses.AddressRefused as exc:
            return None, f"refused: {exc}"
        sent = datetime.fromtimestamp(time.time(), UTC)
        head = headers(msg_id, body, endpoint.secrets, sent)
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                status, answer = await self._pool(endpoint.key).post(target, head, body)
        except TimeoutError:
            return None, "time-out"
        except (OSError, ssl.SSLError, ValueError, http1.NoAnswer) as exc:
            return None, f"no answer: {type(exc).__name__}"
        return status, answer[:ERROR_BODY_CHARS].decode("utf-8", "replace")

    async def deliver(self, endpoint: Signing, c: Claimed) -> Outcome:
        """One claimed delivery sent; never raises for what the receiver does."""
        msg_id = str(c.id)
        body = message(msg_id, c.kind, c.entry["at"], c.entry)
        code, said = await self.post(endpoint, msg_id, body)
        if code is None:
            return Outcome(c.id, None, said)
        if 200 <= code < 300:
            return Outcome(c.id, code, None)
        return Outcome(c.id, code, "redirect not followed" if 300 <= code < 400 else f"HTTP {code}")


async def ping(settings: Settings, endpoint: Signing) -> tuple[int | None, str]:
    """A signed `ping` (data: {}) to one endpoint; its status and its answer's beginning."""
    sender = Sender(settings)
    msg_id = str(uuid.uuid4())
    try:
        return await sender.post(endpoint, msg_id, message(msg_id, "ping", datetime.now(UTC), {}))
    finally:
        await sender.aclose()
