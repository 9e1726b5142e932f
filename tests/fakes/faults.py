"""Fault injection and call counting, as ASGI middleware around a fake API."""

import asyncio
import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body_sha: str
    status: int


@dataclass
class Faults:
    """`plan` holds faults for the next calls, in order: ("status", 429|500|503, retry_after),
    ("drop", before_apply: bool). Calls with no planned fault are served normally."""

    plan: deque = field(default_factory=deque)
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    every: tuple[int, tuple] | None = None  # (n, fault): a fault on every n-th call
    # [method, path part, times left, status, title]: a refusal for matching calls only
    targeted: list[list] = field(default_factory=list)

    def fail_next(self, n: int, status: int, retry_after: str | None = None) -> None:
        self.plan.extend([("status", status, retry_after)] * n)

    def drop_next(self, n: int, *, after_apply: bool = False) -> None:
        self.plan.extend([("drop", after_apply)] * n)

    def refuse(
        self, method: str, contains: str, status: int, *, title: str | None = None, times: int = 1
    ) -> None:
        """Answer `status` (with MailChimp's `title`) to the next `times` matching calls."""
        self.targeted.append([method, contains, times, status, title])

    def _targeted(self, method: str, path: str) -> tuple | None:
        for rule in self.targeted:
            if rule[0] == method and rule[1] in path and rule[2] > 0:
                rule[2] -= 1
                return ("status", rule[3], None, rule[4])
        return None

    def count(self, method: str | None = None, contains: str = "") -> int:
        return sum(
            1
            for c in self.calls
            if (method is None or c.method == method) and contains in c.path and c.status < 300
        )


class FaultMiddleware:
    def __init__(self, app: Any, faults: Faults, error_body: Any) -> None:
        self.app, self.faults, self.error_body = app, faults, error_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        f = self.faults
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        fault = f._targeted(scope["method"], scope["path"])
        if fault is None:
            fault = f.plan.popleft() if f.plan else None
        if fault is None and f.every and (len(f.calls) + 1) % f.every[0] == 0:
            fault = f.every[1]
        f.in_flight += 1
        f.max_in_flight = max(f.max_in_flight, f.in_flight)
        status = {"code": 0}

        async def record_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await asyncio.sleep(0)  # let concurrent calls overlap, as on a network
            if fault and fault[0] == "status":
                code, retry_after = fault[1], fault[2]
                status["code"] = code
                await self._error(send, code, retry_after, fault[3] if len(fault) > 3 else None)
            elif fault and fault[0] == "drop":
                if fault[1]:  # applied, then the answer is lost

                    async def swallow(message: dict) -> None:
                        return None

                    await self.app(scope, replay, swallow)
                status["code"] = 599
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"1000")],
                    }
                )
                raise ConnectionAbortedError("fake: connection dropped")
            else:
                await self.app(scope, replay, record_send)
        finally:
            f.in_flight -= 1
            f.calls.append(
                Call(
                    scope["method"], scope["path"], hashlib.sha256(body).hexdigest(), status["code"]
                )
            )

    async def _error(
        self, send: Any, code: int, retry_after: str | None, title: str | None = None
    ) -> None:
        content_type, payload = self.error_body(code, title) if title else self.error_body(code)
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode()))
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
