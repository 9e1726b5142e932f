"""Bounded retries of requests that lost a serialisation race or a deadlock (issue 14).

PostgreSQL aborts one transaction of a deadlock (40P01) or of a serialisation conflict
(40001); the whole transaction was rolled back, so running the request again is safe. The
error handler marks such a request (`mark_retryable`) and answers 503; this middleware,
inside the body-size limit, replays the buffered request body and runs the request again,
at most `ATTEMPTS` times with a short jittered pause. Only when every attempt lost does
the client see the 503 (with Retry-After): no deadlock error ever reaches it.
"""

import asyncio
import random
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ATTEMPTS = 3
FLAG = "consent_api.retryable"


def mark_retryable(scope: MutableMapping[str, Any]) -> None:
    scope.setdefault("state", {})[FLAG] = True


class RetryConflictsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)  # reads hold no locks worth retrying
            return
        received: list[Message] = []
        done = False

        async def recording_receive() -> Message:
            nonlocal done
            message = await receive()
            if message["type"] == "http.request":
                received.append(message)
                done = not message.get("more_body", False)
            return message

        for attempt in range(ATTEMPTS):
            replay = list(received)
            last = attempt == ATTEMPTS - 1
            attempt_receive = _replaying(replay, recording_receive)
            held: list[Message] = []
            state = scope.setdefault("state", {})
            state.pop(FLAG, None)
            holding_send = _holding_503(held, send)
            await self.app(scope, attempt_receive if attempt else recording_receive, holding_send)
            if not held:
                return
            partly_read = bool(received) and not done  # cannot replay half a body
            if last or not state.get(FLAG) or partly_read:
                for message in held:
                    await send(message)
                return
            await asyncio.sleep(0.02 * (2**attempt) * (1 + random.random()))  # noqa: S311


def _replaying(replay: list[Message], receive: Receive) -> Receive:
    """The messages already received, once more, then the live (recording) stream."""

    async def attempt_receive() -> Message:
        if replay:
            return replay.pop(0)
        return await receive()

    return attempt_receive


def _holding_503(held: list[Message], send: Send) -> Send:
    """`send`, except that a 503 and everything after it is kept in `held`."""

    async def holding_send(message: Message) -> None:
        # Hold a 503 until we know whether it is a retryable loss.
        if held or (message["type"] == "http.response.start" and message["status"] == 503):
            held.append(message)
            return
        await send(message)

    return holding_send
