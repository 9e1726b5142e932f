"""A request body that arrives in reads after its head is body, not head (issue 14's head
limit counted it as head bytes: 431 for any body over 16 KiB sent after its head). Against
the real `consent-api serve` over a socket, the head and the body in separate writes."""

import asyncio
import json
import uuid

import httpx
import pytest

from tests.conftest import new_subject
from tests.live_service import (
    admin_url_of,
    fresh_database,
    make_keys,
    raw_connection,
    running_service,
)

# Keep-alive far longer than the head timeout, so that a close within the tests' 30 s
# waits is the head timer's.
LIMITS = {"http_keep_alive_seconds": "60", "http_head_timeout_seconds": "2"}
PAUSE = 0.2  # between the head and the body: long enough for the server to read the head


@pytest.fixture(scope="module")
async def served(database_url, tmp_path_factory):
    url = await fresh_database(admin_url_of(database_url), "consent_body")
    keys = await make_keys(url, ["crm"])
    with running_service(url, tmp_path_factory.mktemp("body"), **LIMITS) as (base, _proc):
        yield base, keys["crm"]["Authorization"], url


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _head(method: str, path: str, auth: str, content_type: str, length: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: {auth}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=120)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 120)
    return int(status_line.split(" ")[1]), headers, body


async def _exchange(port: int, head: bytes, body: bytes, pieces: int = 1):
    """Send the head, pause, then the body in `pieces` writes (pausing between them): each
    arrives at the server in reads of its own, none of which holds a byte of the head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(PAUSE)
        step = -(-len(body) // pieces)
        for start in range(0, len(body), step):
            writer.write(body[start : start + step])
            await writer.drain()
            if pieces > 1:
                await asyncio.sleep(PAUSE / 4)
        return await _read_response(reader)
    finally:
        writer.close()


async def test_a_decision_batch_sent_after_its_head_is_answered(served):
    base, auth, _url = served
    known = f"after-head-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": auth}) as client:
        r = await client.post("/v1/subjects", json=new_subject(email=known))
        assert r.status_code == 201, r.text
        r = await client.put(
            f"/v1/subjects/{r.json()['id']}/bases/surveys",
            json={"basis": "legitimate_interests", "lia_ref": "LIA-1"},
        )
        assert r.status_code in (200, 201), r.text
    refs = [known] + [f"unknown-{n}-{uuid.uuid4().hex[:6]}@example.com" for n in range(599)]
    body = json.dumps({"purpose": "surveys", "subjects": refs}).encode()
    assert len(body) > 16 * 1024  # over http_max_header_bytes: the case that was refused
    head = _head("POST", "/v1/decisions/batch", auth, "application/json", len(body))

    status, _, answer = await _exchange(_port(base), head, body)

    assert status == 200, answer[:300]
    items = json.loads(answer)["items"]
    assert [i["subject"] for i in items] == refs
    assert items[0]["allowed"] is True and items[0]["reasons"] == []
    assert all(i["reasons"] == ["subject_unknown"] for i in items[1:])


def _import_body(batch: str, size: int) -> tuple[bytes, int]:
    """NDJSON subjects of about 2 KB each, `size` bytes or a little more."""
    lines, total, n = [], 0, 0
    while total < size:
        row = {
            "email": f"import-{batch}-{n}@example.com",
            "name": "Ada Lovelace",
            "company": "Analytical Engines Ltd " + "x" * 170,
            "job_title": "Engineer " + "y" * 180,
            "business_address": "1 Long Street " + "z" * 980,
            "source_detail": "after-head test " + "w" * 480,
            "category": "customer_contact",
            "source": "enquiry",
        }
        line = json.dumps(row).encode() + b"\n"
        lines.append(line)
        total += len(line)
        n += 1
    return b"".join(lines), n


@pytest.mark.parametrize("pieces", [1, 7])
async def test_a_ten_megabyte_import_sent_after_its_head_is_imported(served, pieces):
    base, auth, url = served
    port = _port(base)
    batch = uuid.uuid4().hex[:8]
    body, rows = _import_body(batch, 10 * 1024 * 1024)
    head = _head("POST", "/v1/subjects/import", auth, "application/x-ndjson", len(body))

    status, _, answer = await _exchange(port, head, body, pieces)

    assert status == 200, answer[:300]
    report = json.loads(answer)
    assert report["rows"] == rows
    assert report["imported"] == rows
    assert report["rejected_rows"] == 0
    con = await raw_connection(url)
    try:
        stored = await con.fetchval(
            "SELECT count(*) FROM subjects WHERE email LIKE $1", f"import-{batch}-%"
        )
    finally:
        await con.close()
    assert stored == rows


async def _until_closed(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection, and whether it reset it (it
    does when it closes with bytes of ours unread). Fails if it waits 30 s."""
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout=30):
            received += chunk
    except ConnectionError:
        return received, True
    return received, False


def _refused_for_size(received: bytes, reset: bool) -> bool:
    """A 431, or a reset: the server stopped reading the head. Not a quiet close, which here
    only the head timer makes, after reading the head however large it was."""
    return reset or b"HTTP/1.1 431 " in received


def _batch_request(auth: str) -> tuple[bytes, bytes]:
    body = json.dumps({"purpose": "surveys", "subjects": [str(uuid.uuid4())] * 500}).encode()
    assert len(body) > 16 * 1024
    return _head("POST", "/v1/decisions/batch", auth, "application/json", len(body)), body


async def test_the_next_head_on_a_kept_alive_connection_is_still_bounded(served):
    """After a body sent in reads of its own and its answer, the connection's next head is
    counted again: an oversized one (never ended) is refused."""
    base, auth, _url = served
    port = _port(base)
    head, body = _batch_request(auth)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(PAUSE)
        writer.write(body)
        await writer.drain()
        status, _, answer = await _read_response(reader)
        assert status == 200, answer[:300]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 100_000)
        try:
            await writer.drain()
        except ConnectionError:
            return  # reset while sending: refused
        received, reset = await _until_closed(reader)
    finally:
        writer.close()
    assert _refused_for_size(received, reset), received[:300]


async def test_a_pipelined_head_after_a_body_is_still_bounded(served):
    """The body, then in the same write the start of a 2 MB next head that never ends: its
    first bytes share a read with the body's last, the reads after that are counted."""
    base, auth, _url = served
    port = _port(base)
    head, body = _batch_request(auth)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(PAUSE)
        writer.write(body + b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 2**21)
        try:
            await writer.drain()
        except ConnectionError:
            return  # reset while sending: refused
        received, reset = await _until_closed(reader)
    finally:
        writer.close()
    assert _refused_for_size(received, reset), received[-300:]


async def test_a_head_that_never_ends_after_a_body_is_closed(served):
    """The slowloris timer still runs for a head whose first bytes came with a body's last:
    the batch is answered, then the connection closes (keep-alive is 60 s here, the read
    waits 30 s: only the head timer can have closed it)."""
    base, auth, _url = served
    port = _port(base)
    head, body = _batch_request(auth)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(PAUSE)
        writer.write(body + b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: a")
        await writer.drain()
        status, _, answer = await _read_response(reader)
        assert status == 200, answer[:300]
        assert await _until_closed(reader) == (b"", False)
    finally:
        writer.close()
