"""The HTTP layer of `consent-api serve` (issue 14): request heads bounded in size and in
time, idle connections closed, no `server` header. Against the real uvicorn process."""

import asyncio
from pathlib import Path

import pytest

from app.core.config import DEV_SECRET, Settings
from app.core.crypto import keyed_email_hash
from tests.live_service import admin_url_of, fresh_database, raw_connection, running_service

pytestmark = pytest.mark.pg_independent  # see pyproject.toml's markers

LIMITS = {"http_keep_alive_seconds": "1", "http_head_timeout_seconds": "1"}


@pytest.fixture(scope="module")
async def served(database_url, tmp_path_factory):
    url = await fresh_database(admin_url_of(database_url), "consent_http")
    with running_service(url, tmp_path_factory.mktemp("http"), **LIMITS) as (base, _proc):
        yield int(base.rsplit(":", 1)[1])


async def _closed_by_server(port: int, send: bytes) -> bytes:
    """What the server sends before closing; fails if it keeps the connection 30 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(send)
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), timeout=30)  # read() returns at EOF
    writer.close()
    return received


async def test_a_silent_connection_is_closed(served):
    assert await _closed_by_server(served, b"") == b""


async def test_a_trickled_header_is_closed(served):
    assert await _closed_by_server(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a") == b""


async def test_an_idle_keep_alive_connection_is_closed(served):
    answer = await _closed_by_server(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"\r\nserver:" not in answer.lower()


@pytest.mark.parametrize("size", [100_000, 4_000_000])
async def test_a_huge_header_is_refused(served, size):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(head)
    try:
        await writer.drain()
    except ConnectionError:
        return  # refused while sending: fine
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    except ConnectionError:
        return  # reset by the server: fine
    writer.close()
    assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:100]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\rX-Injected: 1\r\n\r\n",  # bare CR
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    ],
)
async def test_unparsable_requests_get_a_problem_document(served, head):
    answer = await _closed_by_server(served, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split(b" ")[1] == b"400", answer[:200]
    assert b"content-type: application/problem+json" in rest.lower()


@pytest.fixture(scope="module")
async def served_with_audience(database_url, tmp_path_factory):
    """A service whose day-to-day audience is a larger body than loopback sockets hold."""
    from tests.live_service import make_keys

    url = await fresh_database(admin_url_of(database_url), "consent_stream")
    con = await raw_connection(url)
    try:
        # Real keyed hashes (the served service's key): it refuses to start on a database
        # whose hashes another key made (app.services.access.key_fingerprints).
        emails = [f"stream-{n}@example.com" for n in range(1, 60001)]
        hashes = [keyed_email_hash(Settings(secret_key=DEV_SECRET), e) for e in emails]
        await con.execute(
            """INSERT INTO subjects (id, email, email_hash, category, source, restricted,
                 created_at, updated_at)
               SELECT gen_random_uuid(), e, h, 'customer_contact', 'enquiry', false, now(), now()
               FROM unnest($1::text[], $2::text[]) AS t (e, h)""",
            emails,
            hashes,
        )
        await con.execute(
            """INSERT INTO lawful_bases (subject_id, purpose, basis, lia_ref, set_by, set_at)
               SELECT id, 'day_to_day_communications', 'legitimate_interests', 'LIA-1',
                 'test', now() FROM subjects"""
        )
    finally:
        await con.close()
    keys = await make_keys(url, ["sync"])
    with running_service(url, tmp_path_factory.mktemp("stream"), **LIMITS) as (base, _proc):
        yield base, keys["sync"]


def _loopback_holds() -> int:
    """Bytes that TCP on loopback can hold for a reader that has stopped: the largest send
    buffer and a default receive buffer (Linux's settings; its defaults elsewhere)."""
    try:
        send = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
        receive = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        send, receive = 4 * 2**20, 128 * 2**10
    return send + receive


async def test_a_response_streaming_longer_than_the_head_timeout_is_not_cut(
    served_with_audience,
):
    import httpx

    base, key = served_with_audience
    headers = {**key, "Accept": "application/x-ndjson"}
    timeout = float(LIMITS["http_head_timeout_seconds"])
    async with (
        httpx.AsyncClient(base_url=base, timeout=120) as client,
        client.stream("GET", "/v1/audiences/day_to_day_communications", headers=headers) as r,
    ):
        assert r.status_code == 200
        reading = r.aiter_lines()
        lines = [await anext(reading)]
        # The reader pauses past the head timeout. The body is larger than the sockets hold
        # (checked below), so the service is still sending it then, however fast it is: a
        # head timer left running would cut the response there.
        await asyncio.sleep(timeout + 0.5)
        lines += [line async for line in reading if line]
    assert len(lines) == 60000
    assert sum(len(line) + 1 for line in lines) > _loopback_holds()
