"""uvicorn's h11 protocol with a deadline for each request head (issue 14).

uvicorn closes a connection idle *between* requests (`timeout_keep_alive`) but waits for
ever on a client that opens a connection and sends nothing, or trickles a header a byte at
a time (slowloris). Here a request head that is not complete `http_head_timeout_seconds`
after its first byte (or after the connection opened) closes the connection.
"""

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.core.config import get_settings


class BoundedHeadH11Protocol(H11Protocol):
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # a head has begun but is not complete
            if self._head_timer is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        timeout = get_settings().http_head_timeout_seconds
        self._head_timer = self.loop.call_later(timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (bare CR, bad header, oversized head) gets a problem
        document like every other error, not uvicorn's text/plain."""
        status = 431 if "too large" in msg.lower() or "too long" in msg.lower() else 400
        body = json.dumps(
            {
                "type": "urn:consent-api:problem:"
                + ("headers-too-large" if status == 431 else "bad-request"),
                "title": "Request header fields too large" if status == 431 else "Bad request",
                "status": status,
                "detail": "The request is not valid HTTP/1.1.",
            }
        ).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]
        try:
            for event in (
                h11.Response(status_code=status, headers=headers),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:
            pass  # a response had already begun: just close
        self.transport.close()

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
