"""A small HTTP/1.1 receiver on 127.0.0.1 for the webhook tests and the benchmark: it keeps
every request (headers, body) and answers what `answer` says (a status, or an awaitable one
to hold a call open). Keep-alive, Content-Length bodies; nothing else is needed here."""

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Answer = Callable[[dict[str, str], bytes], int | Awaitable[int]]
REASONS = {200: "OK", 204: "No Content", 302: "Found", 410: "Gone", 500: "Server Error"}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # None while the answer is held


@dataclass
class Receiver:
    answer: Answer = lambda headers, body: 200
    requests: list[Received] = field(default_factory=list)
    keep: bool = True  # False: count only (the benchmark's memory)
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        seen = Received(headers, body)
        if self.keep:
            self.requests.append(seen)
        status = self.answer(headers, body)
        if inspect.isawaitable(status):
            status = await status
        seen.status = int(status)
        extra = "Location: /elsewhere\r\n" if 300 <= seen.status < 400 else ""
        writer.write(
            f"HTTP/1.1 {seen.status} {REASONS.get(seen.status, 'X')}\r\n{extra}"
            "Content-Length: 2\r\nContent-Type: text/plain\r\n\r\nok".encode()
        )
        await writer.drain()
        return headers.get("connection", "").lower() != "close"
