"""Audiences for sync clients (sync, crm, auditor): who the gate allows, page by page or
streamed as NDJSON."""

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from app.core.auth import Principal, require
from app.core.driver import Database, DatabaseDep
from app.core.errors import problem_responses
from app.core.pagination import Cursor, Limit
from app.models.audience import AudiencePage
from app.models.catalogue import KEY_PATTERN
from app.services.gate import audiences

router = APIRouter(prefix="/v1/audiences", tags=["sync"])
Reader = Annotated[Principal, Depends(require("audiences:read"))]
NDJSON = "application/x-ndjson"
# Subjects scanned per chunk of the NDJSON stream, each chunk one transaction. 5,000 rather
# than 1,000: a fifth of the commits and of the per-chunk planning (the loop alone went from
# 12-13,500 to 16,000 rows/s on the bench data); the members of one chunk are a few MB.
STREAM_CHUNK = 5000
# Chunks evaluated at once, each on its own pooled connection (PostgreSQL runs each in its
# own backend, so they use more than one core), handed out in order. Memory stays at this
# many chunks. A chunk beyond the first is started only while more than half the worker's
# pool is idle: streams never crowd out the hot paths.
STREAM_CHUNKS_AHEAD = 2


async def _stream(
    request: Request, principal: Principal, purpose: str, recipient: str | None
) -> AsyncGenerator[bytes, None]:
    """Chunk by chunk, each in its own transaction: a chunk's decisions are committed before
    its subjects leave, and memory stays flat however large the audience. The next chunks'
    ranges come from a cheap walk over subjects' keys, so that they are evaluated side by
    side; ranges that meet leave no subject out and none twice."""
    db: Database = request.app.state.database
    ahead: deque[asyncio.Task[list[str]]] = deque()
    after: UUID | None = None
    last = False
    try:
        while ahead or not last:
            # The first chunk always; the next while there is room (Database.can_run_beside).
            while not last and (
                not ahead or (len(ahead) < STREAM_CHUNKS_AHEAD and db.can_run_beside())
            ):
                # Shielded, like the clean-up below: one short statement, whose connection
                # must go back to the pool whole even when the client leaves meanwhile.
                with anyio.CancelScope(shield=True):
                    upto, count = await audiences.next_range_end(db, after=after, scan=STREAM_CHUNK)
                if upto is not None:
                    chunk = _range_lines(db, principal, purpose, recipient, after=after, upto=upto)
                    ahead.append(asyncio.create_task(chunk))
                    after = upto
                last = count < STREAM_CHUNK  # fewer remained: that range was the last
            if not ahead:  # none remained at all
                return
            # Shielded: a cancellation of this stream (repeated, see below) must not reach
            # the chunk and cut its rollback short; `finally` stops it, once. It stays in
            # `ahead` until done, so that `finally` covers it.
            lines = await asyncio.shield(ahead[0])
            ahead.popleft()
            if lines:
                yield "".join(line + "\n" for line in lines).encode()  # a newline after each
    finally:
        # The client left, or a chunk failed: the chunks not handed out are stopped (their
        # transactions roll back) and their connections returned before the stream ends.
        # Shielded: Starlette cancels the streaming task again and again when the client
        # leaves (ASGI spec < 2.4), which would otherwise cut this wait short.
        for task in ahead:
            task.cancel()
        if ahead:
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*ahead, return_exceptions=True)


async def _range_lines(
    db: Database,
    principal: Principal,
    purpose: str,
    recipient: str | None,
    *,
    after: UUID | None,
    upto: UUID,
) -> list[str]:
    return await audiences.range_members(
        db, principal, purpose=purpose, recipient=recipient, after=after, upto=upto
    )


@router.get(
    "/{purpose}",
    response_model=AudiencePage,
    responses={
        200: {
            "content": {
                NDJSON: {
                    "schema": {"$ref": "#/components/schemas/AudienceMember"},
                    "example": '{"subject_id": "...", "email": "...", "name": null,'
                    ' "company": null}\n',
                }
            },
            "description": "A page, or with `Accept: application/x-ndjson` the whole"
            " audience, one member per line",
        },
        **problem_responses(401, 403, 422),
    },
)
async def list_audience(
    request: Request,
    db: DatabaseDep,
    principal: Reader,
    purpose: Annotated[str, Path(max_length=63, pattern=KEY_PATTERN)],
    recipient: Annotated[str | None, Query(max_length=63, pattern=KEY_PATTERN)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AudiencePage | Response:
    """The subjects the gate allows for a purpose (and recipient); each one handed out is a
    stored decision."""
    if NDJSON in request.headers.get("accept", ""):
        await audiences.require_target(db, purpose, recipient)
        return StreamingResponse(_stream(request, principal, purpose, recipient), media_type=NDJSON)
    return await audiences.serve_page(
        db, principal, purpose=purpose, recipient=recipient, limit=limit, cursor=cursor
    )
