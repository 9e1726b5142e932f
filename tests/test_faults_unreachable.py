"""Every way the database can be out of reach is a 503 problem with Retry-After, saying
honestly what became of the write (issue 14, "production fails closed").

Each kind is provoked for real against this module's own PostgreSQL server, through the
app over HTTP: a stopped server (its Unix socket gone), a closed port, a name that does
not resolve, TLS refused and TLS failing, a frozen server (connect and command time-outs),
statement_timeout, a connection killed mid-statement, a server shutting down, a role out
of connection slots, and both pools exhausted. Where nothing was sent the problem says
nothing was stored; where a statement was sent, that it may have been, and a retry with
the same Idempotency-Key then stores it exactly once. The log names the kind and the
exception types met, which is how each test knows it met the fault it meant to."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import new_subject
from tests.live_service import fresh_database, make_keys, raw_connection
from tests.outage_support import (
    assert_503,
    fault_settings,
    logged_kind,
    new_tag,
    serving,
    stored,
    write,
)
from tests.pg_server import ScratchPostgres, embedded_bin_dir, free_port

pytestmark = pytest.mark.faults


@dataclass
class Pg:
    server: ScratchPostgres
    url: str  # over TCP
    socket_url: str  # the same database over the Unix socket
    crm: dict[str, str]
    subject_id: str


@pytest.fixture(scope="module")
async def pg(test_settings) -> AsyncIterator[Pg]:
    server = ScratchPostgres(embedded_bin_dir())
    try:
        server.start()
        url = await fresh_database(server.admin_url, "consent_kinds")
        crm = (await make_keys(url, ["crm"]))["crm"]
        async with serving(url, fault_settings(test_settings)) as (client, _app):
            subject = await client.post("/v1/subjects", json=new_subject(), headers=crm)
        assert subject.status_code == 201, subject.text
        database = make_url(url).database
        assert database is not None
        yield Pg(server, url, server.socket_url(database), crm, subject.json()["id"])
    finally:
        server.close()


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.WARNING, logger="consent_api.errors")
    return caplog


def _with(url: str, **parts) -> str:
    return make_url(url).set(**parts).render_as_string(hide_password=False)


async def test_a_stopped_server_behind_a_unix_socket_is_503(pg, test_settings, warnings_logged):
    """The socket file goes with the server: asyncpg's connect raises FileNotFoundError,
    which was a 500 before. The service comes back by itself with the server."""
    async with serving(pg.socket_url, fault_settings(test_settings)) as (client, _):
        assert (await write(client, pg.crm, pg.subject_id, new_tag())).status_code == 201
        await asyncio.to_thread(pg.server.stop, "fast")
        try:
            assert not list(pg.server.root.glob(".s.PGSQL.*"))
            answers = [await write(client, pg.crm, pg.subject_id, new_tag()) for _ in range(3)]
        finally:
            await asyncio.to_thread(pg.server.start)
        for r in answers[:-1]:  # a pooled connection not yet seen closed: maybe stored
            assert_503(r, r.json().get("write_outcome"))
        assert_503(answers[-1], "not_stored")
        assert logged_kind(warnings_logged, "FileNotFoundError") == "unreachable"
        assert (await write(client, pg.crm, pg.subject_id, new_tag())).status_code == 201


@pytest.mark.parametrize(
    ("where", "raised"),
    [
        ("closed port", "ConnectionRefusedError"),
        ("unresolvable name", "gaierror"),
        ("TLS required, server without TLS", "ConnectionError"),
    ],
)
async def test_a_database_never_reached_is_503_nothing_stored(
    pg, test_settings, warnings_logged, where, raised
):
    urls = {
        "closed port": _with(pg.url, port=free_port()),
        "unresolvable name": _with(pg.url, host="nonexistent.invalid"),
        # libpq's spelling: the engine and the hot paths' pool both honour it now.
        "TLS required, server without TLS": _with(pg.url, query={"sslmode": "require"}),
    }
    async with serving(urls[where], fault_settings(test_settings), lazy=True) as (client, _):
        r = await write(client, pg.crm, pg.subject_id, new_tag())
    assert_503(r, "not_stored")
    assert logged_kind(warnings_logged, raised) == "unreachable"


async def test_a_failing_tls_handshake_is_503_nothing_stored(pg, test_settings, warnings_logged):
    """Something at the address agrees to TLS, then answers with what is not TLS (a
    misrouted port, a broken proxy): ssl.SSLError while connecting."""

    async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(8)  # PostgreSQL's SSLRequest
        writer.write(b"S")  # "go ahead with TLS"
        await writer.drain()
        await reader.read(1024)  # the client's TLS hello
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(not_tls, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    url = _with(pg.url, port=port, query={"ssl": "require"})
    try:
        async with serving(url, fault_settings(test_settings), lazy=True) as (client, _):
            r = await write(client, pg.crm, pg.subject_id, new_tag())
    finally:
        listener.close()
    assert_503(r, "not_stored")
    assert logged_kind(warnings_logged, "SSLError") == "unreachable"


async def test_a_frozen_server_times_out_connecting_and_executing(
    pg, test_settings, warnings_logged
):
    """SIGSTOP: a new connection never completes (connect time-out: nothing sent), a
    pooled one takes the statement and never answers (command time-out: maybe stored)."""
    settings = fault_settings(test_settings)
    async with (
        serving(pg.url, settings) as (warm, _),
        serving(pg.url, settings, lazy=True) as (cold, _),
    ):
        assert (await write(warm, pg.crm, pg.subject_id, new_tag())).status_code == 201
        sent, unsent = new_tag(), new_tag()
        # A cold path: the engine has no connection yet (its pool is not the hot paths').
        listing = {"params": {"subject_id": pg.subject_id}, "headers": pg.crm}
        pg.server.freeze()
        try:
            executing, connecting, engine_connecting = await asyncio.gather(
                write(warm, pg.crm, pg.subject_id, sent),  # on a pooled connection
                write(cold, pg.crm, pg.subject_id, unsent),  # needs a new connection
                warm.get("/v1/consent-events", **listing),
            )
        finally:
            pg.server.thaw()
        assert_503(executing, "unknown")
        assert_503(connecting, "not_stored")
        assert_503(engine_connecting, "not_stored")
        kinds = {kind for kind, types in _outages(warnings_logged) if "TimeoutError" in types}
        assert kinds == {"timed_out", "unreachable"}, kinds
        retried = await write(warm, pg.crm, pg.subject_id, sent)
        assert retried.status_code == 201, retried.text
    assert await stored(pg.url, sent) == 1
    assert await stored(pg.url, unsent) == 0


def _outages(caplog) -> list[tuple[str, list[str]]]:
    return [(r.outage, r.error_types) for r in caplog.records if getattr(r, "outage", None)]


async def _lock_consent_events(url: str) -> tuple[asyncpg.Connection, object]:
    """A transaction holding consent_events: every write of an event waits behind it."""
    holder = await raw_connection(url)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("LOCK TABLE consent_events IN ACCESS EXCLUSIVE MODE")
    return holder, transaction


async def test_a_statement_cancelled_by_statement_timeout_is_503_maybe_stored(
    pg, test_settings, warnings_logged
):
    settings = fault_settings(test_settings, db_statement_timeout_ms=600)
    tag = new_tag()
    async with serving(pg.url, settings) as (client, _):
        assert (await write(client, pg.crm, pg.subject_id, new_tag())).status_code == 201
        holder, transaction = await _lock_consent_events(pg.url)
        try:
            r = await write(client, pg.crm, pg.subject_id, tag)
        finally:
            await transaction.rollback()
            await holder.close()
        assert_503(r, "unknown")
        assert logged_kind(warnings_logged, "QueryCanceledError") == "timed_out"
        assert (await write(client, pg.crm, pg.subject_id, tag)).status_code == 201
    assert await stored(pg.url, tag) == 1


async def test_a_statement_cancelled_or_killed_mid_way_is_503_maybe_stored(
    pg, test_settings, warnings_logged
):
    """While the write waits on a lock: pg_cancel_backend cancels its statement, then
    pg_terminate_backend kills its connection; both after the statement was sent."""
    cancelled, killed = new_tag(), new_tag()
    async with serving(pg.url, fault_settings(test_settings)) as (client, _):
        assert (await write(client, pg.crm, pg.subject_id, new_tag())).status_code == 201
        holder, transaction = await _lock_consent_events(pg.url)
        answers = []
        try:
            for tag, how in ((cancelled, "pg_cancel_backend"), (killed, "pg_terminate_backend")):
                writing = asyncio.create_task(write(client, pg.crm, pg.subject_id, tag))
                pid = await _waiting_backend(holder)
                await holder.execute(f"SELECT {how}($1)", pid)
                answers.append(await writing)
        finally:
            await transaction.rollback()
            await holder.close()
        for r in answers:
            assert_503(r, "unknown")
        assert logged_kind(warnings_logged, "QueryCanceledError") == "cancelled"
        assert logged_kind(warnings_logged, "ConnectionDoesNotExistError") == "lost"
        for tag in (cancelled, killed):  # the retry with the same key: stored once
            assert (await write(client, pg.crm, pg.subject_id, tag)).status_code == 201
    assert [await stored(pg.url, tag) for tag in (cancelled, killed)] == [1, 1]


async def _waiting_backend(holder: asyncpg.Connection) -> int:
    """The app's backend that waits for a lock in this database."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = await holder.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'consent-api' AND wait_event_type = 'Lock'"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the write never waited for the lock")


async def test_a_server_shutting_down_is_503_nothing_stored(pg, test_settings, warnings_logged):
    """A smart shutdown waits for the open sessions and refuses new ones meanwhile
    (SQLSTATE 57P03, cannot connect now)."""
    holder = await raw_connection(pg.url)
    try:
        await asyncio.to_thread(pg.server.stop, "smart", wait=False)
        await _refusing_connections(pg.url)
        async with serving(pg.url, fault_settings(test_settings), lazy=True) as (client, _):
            r = await write(client, pg.crm, pg.subject_id, new_tag())
    finally:
        await holder.close()
        await _stopped(pg.server)
        await asyncio.to_thread(pg.server.start)
    assert_503(r, "not_stored")
    assert logged_kind(warnings_logged, "CannotConnectNowError") == "unreachable"


async def _refusing_connections(url: str) -> None:
    for _ in range(100):
        try:
            conn = await raw_connection(url)
        except asyncpg.CannotConnectNowError:
            return
        await conn.close()
        await asyncio.sleep(0.05)
    raise AssertionError("the server never began its shutdown")


async def _stopped(server: ScratchPostgres) -> None:
    for _ in range(600):
        if not server.is_running():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server did not stop")


async def test_a_role_out_of_connection_slots_is_503_nothing_stored(
    pg, test_settings, warnings_logged
):
    """Refused at start-up for too many connections (SQLSTATE 53300)."""
    admin = await raw_connection(pg.server.admin_url)
    try:
        await admin.execute("DROP ROLE IF EXISTS no_slots")
        await admin.execute("CREATE ROLE no_slots LOGIN CONNECTION LIMIT 0")
    finally:
        await admin.close()
    url = _with(pg.url, username="no_slots")
    async with serving(url, fault_settings(test_settings), lazy=True) as (client, _):
        r = await write(client, pg.crm, pg.subject_id, new_tag())
    assert_503(r, "not_stored")
    assert logged_kind(warnings_logged, "TooManyConnectionsError") == "unreachable"


async def test_exhausted_pools_are_503_nothing_stored(pg, test_settings, warnings_logged):
    """One connection in the hot paths' pool, one plus one overflow in the engine's: all
    held by the test, a request waits `db_pool_timeout_seconds` and gets a 503."""
    settings = fault_settings(test_settings, db_pool_size=1)
    async with serving(pg.url, settings) as (client, app):
        assert (await write(client, pg.crm, pg.subject_id, new_tag())).status_code == 201
        held = await app.state.database.pool.acquire()
        try:
            hot = await write(client, pg.crm, pg.subject_id, new_tag())
        finally:
            await app.state.database.pool.release(held)
        engine_held = [await app.state.engine.connect() for _ in range(2)]
        try:
            cold = await client.get(
                "/v1/consent-events", params={"subject_id": pg.subject_id}, headers=pg.crm
            )
        finally:
            for conn in engine_held:
                await conn.close()
        assert (await write(client, pg.crm, pg.subject_id, new_tag())).status_code == 201
    assert_503(hot, "not_stored")
    assert_503(cold, "not_stored")
    kinds = [kind for kind, _types in _outages(warnings_logged)]
    assert kinds == ["exhausted", "exhausted"], _outages(warnings_logged)
