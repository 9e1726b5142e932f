"""The NDJSON audience stream evaluates its chunks side by side on pooled connections
(issue 9): the same members as the pages and the gate, once each and in id order; ranges
that meet, whatever changes between computing a range and evaluating it; and a client that
leaves stops the chunks ahead and gets every connection back. On a database of the test's
own, committed for real: the side-by-side path needs more than the suite's one connection."""

import asyncio
import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import StreamingResponse

from app.core.auth import ROLE_SCOPES, Principal
from app.core.db import create_engine, create_sessionmaker
from app.core.driver import Database
from app.main import create_app
from app.routers import audiences as audience_router
from app.services.gate import audiences
from tests import gate_state as gs
from tests.live_service import admin_url_of, fresh_database, make_keys
from tests.test_sync_audiences import _population, _single

SYNC = Principal(uuid.uuid4(), "stream-test", "sync", ROLE_SCOPES["sync"])
URL = "/v1/audiences/email_campaigns?recipient=mailchimp"


@pytest.fixture
async def own(database_url: str, test_settings: Any) -> AsyncIterator[tuple[str, AsyncEngine]]:
    url = await fresh_database(admin_url_of(database_url), "consent_stream")
    engine = create_engine(url, test_settings)
    yield url, engine
    await engine.dispose()


async def _committed_population(engine: AsyncEngine, n: int) -> set[uuid.UUID]:
    """A generated population, committed; the subjects the gate allows (asked, not stored)."""
    async with create_sessionmaker(engine)() as db:
        ids = await _population(db, n=n, seed=7)
        await db.commit()
        allowed = await _single(db, ids, "mailchimp")
        await db.rollback()  # the single decisions asked here are not the stream's
    return allowed


async def _allowed_subjects(
    engine: AsyncEngine, n: int, sid: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """`n` subjects, committed, whom the gate allows for email_campaigns to anyone."""
    async with create_sessionmaker(engine)() as db:
        ids = []
        for _ in range(n):
            # A given id's neighbour shares the first 12 hex digits the default e-mail uses.
            email = f"{sid.hex}@example.com" if sid else None
            ids.append(await gs.subject(db, sid=sid, email=email))
            await gs.basis(db, ids[-1], "email_campaigns", "legitimate_interests")
        await db.commit()
    return ids


def _chunks_at_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the chunks evaluated at once; the list holds the most seen."""
    in_flight, most = 0, [0]
    range_lines = audiences.range_lines

    async def counted(*args: Any, **kwargs: Any) -> list[str]:
        nonlocal in_flight
        in_flight += 1
        most[0] = max(most[0], in_flight)
        try:
            await asyncio.sleep(0.01)  # let the next chunk start, if it is going to
            return await range_lines(*args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(audiences, "range_lines", counted)
    return most


async def _pooled_app(url: str, engine: AsyncEngine, settings: Any) -> Any:
    """The app as `serve` runs it: hot paths on an asyncpg pool of their own."""
    app = create_app(settings, engine=engine)
    app.state.database = await Database.open(url, settings)
    return app


async def _all_connections_back(app: Any) -> None:
    pool = app.state.database.pool
    try:
        assert pool.get_idle_size() == pool.get_size()  # none left checked out
        every = [await pool.acquire() for _ in range(pool.get_size())]
        assert not any(con.is_in_transaction() for con in every)  # none left mid-chunk
        for con in every:
            await pool.release(con)
    finally:
        await app.state.database.close()


async def _sync_decisions(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT subject_id, allowed FROM decisions WHERE requester_role = 'sync'")
        )
        return list(result.all())


async def test_side_by_side_chunks_hand_out_what_the_pages_and_the_gate_do(
    own, test_settings, monkeypatch
):
    url, engine = own
    expected = await _committed_population(engine, 120)
    assert 15 < len(expected) < 120
    monkeypatch.setattr(audience_router, "STREAM_CHUNK", 7)  # about sixteen chunks
    most = _chunks_at_once(monkeypatch)
    app = await _pooled_app(url, engine, test_settings)
    sync = (await make_keys(url, ["sync"]))["sync"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        streamed = await client.get(URL, headers={**sync, "Accept": "application/x-ndjson"})
        assert streamed.status_code == 200
        lines = [orjson.loads(line) for line in streamed.content.splitlines()]
        assert most == [audience_router.STREAM_CHUNKS_AHEAD] == [2]  # side by side, no more
        stored = await _sync_decisions(engine)
        paged, cursor = [], None
        while True:
            query = "&limit=5" + (f"&cursor={cursor}" if cursor else "")
            page = (await client.get(URL + query, headers=sync)).json()
            paged += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
    got = [uuid.UUID(m["subject_id"]) for m in lines]
    assert got == sorted(expected)  # each allowed subject once, in id order
    assert lines == paged
    # Every member handed out is a stored, allowed decision of the stream, and no other.
    assert sorted(r.subject_id for r in stored) == got and all(r.allowed for r in stored)
    await _all_connections_back(app)


async def test_ranges_that_meet_cover_subjects_added_or_erased_meanwhile(own):
    _url, engine = own
    ids = await _allowed_subjects(engine, 20)
    database = Database(engine=engine)
    async with database.autocommit() as con:
        first, n = await audiences.chunk_end(con, after=None, scan=10)
        assert (first, n) == (sorted(ids)[9], 10)
        second, n = await audiences.chunk_end(con, after=first, scan=11)
        assert (second, n) == (sorted(ids)[19], 10)  # fewer than asked: the last range
        assert await audiences.chunk_end(con, after=second, scan=11) == (None, 0)
    assert first is not None and second is not None
    # Between computing the ranges and evaluating them: a subject joins the first range
    # (its id just below the range's end) and another in it is erased.
    joined = uuid.UUID(int=first.int - 1)
    erased = sorted(ids)[3]
    await _allowed_subjects(engine, 1, sid=joined)
    async with create_sessionmaker(engine)() as db:
        await db.execute(
            text("UPDATE subjects SET erased_at = now() WHERE id = :id"), {"id": erased}
        )
        await db.commit()
    handed_out = []
    for after, end in ((None, first), (first, second)):
        async with database.transaction() as con:
            lines = await audiences.range_lines(
                con, SYNC, purpose="email_campaigns", recipient=None, after=after, upto=end
            )
        handed_out += [uuid.UUID(orjson.loads(line)["subject_id"]) for line in lines]
    assert handed_out == sorted({*ids, joined} - {erased})


async def test_a_client_that_leaves_stops_the_chunks_ahead_and_returns_connections(
    own, test_settings, monkeypatch
):
    """As uvicorn serves it (ASGI spec 2.3: Starlette cancels the stream when the client's
    disconnect arrives), with the second chunk still in flight, inside its transaction."""
    url, engine = own
    ids = await _allowed_subjects(engine, 40)
    monkeypatch.setattr(audience_router, "STREAM_CHUNK", 5)
    range_lines = audiences.range_lines

    async def second_chunk_hangs(con: Any, *args: Any, after: Any, **kwargs: Any) -> list[str]:
        if after is not None:
            await con.execute("SELECT 1")  # its transaction has begun on the server
            await asyncio.sleep(60)
        return await range_lines(con, *args, after=after, **kwargs)

    monkeypatch.setattr(audiences, "range_lines", second_chunk_hangs)
    app = await _pooled_app(url, engine, test_settings)
    request = Request({"type": "http", "app": app, "headers": []})
    stream = audience_router._stream(request, SYNC, "email_campaigns", None)
    response = StreamingResponse(stream, media_type="application/x-ndjson")
    bodies: list[bytes] = []
    first_body = asyncio.Event()
    asked = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_body.wait()
        return {"type": "http.disconnect"}  # the client leaves after the first chunk

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            bodies.append(message["body"])
            first_body.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "app": app}
    await asyncio.wait_for(response(scope, receive, send), 30)  # not 60: the chunk stopped
    first = [orjson.loads(line) for line in bodies[0].splitlines()]
    assert len(bodies) == 1 and [uuid.UUID(m["subject_id"]) for m in first] == sorted(ids)[:5]
    await _all_connections_back(app)  # at once: the stream ended only after returning them
    stored = sorted(r.subject_id for r in await _sync_decisions(engine))
    assert stored == sorted(ids)[:5]  # the chunk in flight was rolled back


async def test_a_stream_takes_one_chunk_at_a_time_while_the_pool_is_busy(
    own, test_settings, monkeypatch
):
    """A second chunk only while more than half the pool is idle: the hot paths first."""
    url, engine = own
    ids = await _allowed_subjects(engine, 30)
    monkeypatch.setattr(audience_router, "STREAM_CHUNK", 5)
    most = _chunks_at_once(monkeypatch)
    app = await _pooled_app(url, engine, test_settings)
    pool = app.state.database.pool
    busy = [await pool.acquire() for _ in range(pool.get_size() // 2)]  # requests elsewhere
    try:
        request = Request({"type": "http", "app": app, "headers": []})
        stream = audience_router._stream(request, SYNC, "email_campaigns", None)
        body = b"".join([chunk async for chunk in stream])
    finally:
        for con in busy:
            await pool.release(con)
    assert [uuid.UUID(orjson.loads(line)["subject_id"]) for line in body.splitlines()] == sorted(
        ids
    )
    assert most == [1]
    await _all_connections_back(app)
