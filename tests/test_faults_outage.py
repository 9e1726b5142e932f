"""A database outage under write load (issue 14): PostgreSQL stopped (fast shutdown) for
5 s and restarted, once with the service reaching it over TCP and once over its Unix socket
(where a stopped server's socket file is gone: asyncpg's FileNotFoundError, a 500 before);
then frozen (SIGSTOP) for 5 s, under steady writes of subjects and consent events, each
with an Idempotency-Key and retried with it until answered.

Asserts behaviour, not speed: during the outage answers are 503 problem documents with
Retry-After that say whether the write may have been stored (never a 500, never a hang
past the client's generous timeout); /readyz says 503; the service recovers by itself;
every acknowledged write is in the database once, and retries with the same
Idempotency-Key never store twice. The figures are printed."""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.live_service import fresh_database, make_keys, raw_connection, running_service
from tests.pg_server import ScratchPostgres, embedded_bin_dir
from tests.test_consent import give

pytestmark = pytest.mark.faults

WRITERS = 8
OUTAGE_SECONDS = 5.0
HANG_LIMIT = 30.0  # a request unanswered after this long counts as a hang


@dataclass
class Tally:
    attempted: int = 0
    acknowledged: dict[str, str] = field(default_factory=dict)  # tag -> kind
    statuses: dict[int, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # a 503's write_outcome
    bad: list[str] = field(default_factory=list)
    last_ok: float = 0.0

    def saw(self, r: httpx.Response) -> None:
        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500 and r.status_code != 503:
            self.bad.append(f"{r.status_code} {r.text[:200]}")
        if r.status_code == 503:
            if r.headers.get("content-type") != "application/problem+json":
                self.bad.append("503 without problem+json")
            if not r.headers.get("retry-after", "").isdigit():
                self.bad.append("503 without Retry-After")
            problem = r.headers.get("content-type") == "application/problem+json"
            outcome = str(r.json().get("write_outcome")) if problem else "none"
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            if outcome not in ("not_stored", "unknown"):
                self.bad.append(f"503 without a write outcome: {r.text[:200]}")


async def _write_until(stop: asyncio.Event, client: httpx.AsyncClient, crm: dict, tally: Tally):
    subject_id: str | None = None
    while not stop.is_set():
        tag = uuid.uuid4().hex
        if subject_id is None or tally.attempted % 2:
            kind, path = "subject", "/v1/subjects"
            body = {"email": f"w-{tag}@example.com", "category": "customer_contact",
                    "source": "enquiry", "source_detail": tag}  # fmt: skip
        else:
            kind, path = "consent", "/v1/consent-events"
            body = give(subject_id, evidence={"form_id": tag, "page_url": "https://e.x/",
                                              "user_agent": "load"})  # fmt: skip
        tally.attempted += 1
        headers = {**crm, "Idempotency-Key": tag}
        for _attempt in range(200):  # retry the same write, same key, until it is answered
            try:
                r = await client.post(path, json=body, headers=headers)
            except httpx.TimeoutException:
                tally.bad.append(f"hang: {path} unanswered after {HANG_LIMIT} s")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            tally.saw(r)
            if r.status_code in (200, 201):
                tally.acknowledged[tag] = kind
                tally.last_ok = time.monotonic()
                if kind == "subject":
                    subject_id = r.json()["id"]
                break
            if r.status_code != 503:
                tally.bad.append(f"{r.status_code} for {kind}: {r.text[:200]}")
                break
            await asyncio.sleep(min(0.5, float(r.headers.get("retry-after", "1"))))


async def _readyz(client: httpx.AsyncClient) -> int:
    try:
        return (await client.get("/readyz")).status_code
    except httpx.TimeoutException:
        return -1


async def _ready_eventually(client: httpx.AsyncClient) -> int:
    """/readyz until it says 200 (a loaded machine may miss the short timeout once)."""
    for _ in range(30):
        if (status := await _readyz(client)) == 200:
            return status
        await asyncio.sleep(0.5)
    return status


async def _first_ok_after(client: httpx.AsyncClient, crm: dict, since: float) -> float:
    """Seconds from `since` until a fresh write is acknowledged (probing every 0.1 s)."""
    while True:
        body = {"email": f"probe-{uuid.uuid4().hex}@example.com",
                "category": "customer_contact", "source": "enquiry"}  # fmt: skip
        try:
            r = await client.post("/v1/subjects", json=body, headers=crm)
            if r.status_code == 201:
                return time.monotonic() - since
        except httpx.TransportError:
            pass
        if time.monotonic() - since > 120:
            raise AssertionError("the service did not recover within 120 s")
        await asyncio.sleep(0.1)


async def _check_database(url: str, tally: Tally) -> dict[str, int]:
    conn = await raw_connection(url)
    try:
        subjects = await conn.fetch(
            "SELECT source_detail AS tag, count(*) AS n FROM subjects"
            " WHERE source_detail IS NOT NULL GROUP BY 1"
        )
        events = await conn.fetch(
            "SELECT form_id AS tag, count(*) AS n FROM consent_events WHERE form_id IS NOT NULL"
            " AND form_id <> 'form-one' GROUP BY 1"
        )
    finally:
        await conn.close()
    stored = {r["tag"]: r["n"] for r in [*subjects, *events]}
    found = sum(1 for tag in tally.acknowledged if stored.get(tag, 0) >= 1)
    duplicated = sum(1 for n in stored.values() if n > 1)
    return {"stored": len(stored), "found": found, "duplicated": duplicated}


async def _phase(name, base, crm, break_it, mend_it) -> dict:
    tally = Tally()
    stop = asyncio.Event()
    timeout = httpx.Timeout(HANG_LIMIT)
    async with httpx.AsyncClient(base_url=base, timeout=timeout) as client:
        writers = [
            asyncio.create_task(_write_until(stop, client, crm, tally)) for _ in range(WRITERS)
        ]
        await asyncio.sleep(2)
        assert await _ready_eventually(client) == 200
        await asyncio.to_thread(break_it)  # the writers keep writing meanwhile
        broken_at = time.monotonic()
        await asyncio.sleep(1)
        ready_during = await _readyz(client)
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - broken_at)))
        await asyncio.to_thread(mend_it)
        mended_at = time.monotonic()
        recovered = await _first_ok_after(client, crm, mended_at)
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*writers)
        ready_after = await _ready_eventually(client)
    return {
        "phase": name,
        "tally": tally,
        "ready_during": ready_during,
        "ready_after": ready_after,
        "recover_s": round(recovered, 2),
    }


SERVICE_SETTINGS = {
    "db_pool_timeout_seconds": "2",
    "db_command_timeout_seconds": "3",
    "db_connect_timeout_seconds": "2",
    "readyz_timeout_seconds": "1",
}


@pytest.fixture(scope="module")
async def outage_database():
    """A server of this module's own, its database migrated, and a crm key."""
    server = ScratchPostgres(embedded_bin_dir())
    try:
        server.start()
        url = await fresh_database(server.admin_url, "consent_faults")
        crm = (await make_keys(url, ["crm"]))["crm"]
        yield server, url, crm
    finally:
        server.close()


async def _judge(url: str, phase: dict, capsys) -> None:
    """Nothing acknowledged lost, nothing stored twice, only 503s among the failures."""
    tally: Tally = phase["tally"]
    db = await _check_database(url, tally)
    figures = {
        "phase": phase["phase"],
        "attempted": tally.attempted,
        "acknowledged": len(tally.acknowledged),
        "found": db["found"],
        "duplicated": db["duplicated"],
        "statuses": tally.statuses,
        "outcomes_503": tally.outcomes,
        "readyz_during": phase["ready_during"],
        "seconds_to_recover": phase["recover_s"],
    }
    with capsys.disabled():
        print("\noutage figures:", json.dumps(figures, default=str))
    assert not tally.bad, tally.bad[:5]
    assert db["found"] == len(tally.acknowledged), (phase["phase"], db)
    assert db["duplicated"] == 0
    assert phase["ready_during"] == 503, phase
    assert phase["ready_after"] == 200, phase
    assert tally.statuses.get(503, 0) > 0, "the outage was never seen"


@pytest.mark.parametrize("transport", ["tcp", "unix socket"])
async def test_a_stopped_server_loses_nothing_and_answers_503(
    outage_database, transport, tmp_path, capsys
):
    server, url, crm = outage_database
    database = make_url(url).database
    assert database is not None
    service_url = url if transport == "tcp" else server.socket_url(database)
    with running_service(service_url, tmp_path, **SERVICE_SETTINGS) as (base, _proc):
        phase = await _phase(
            f"stop -m fast over {transport}", base, crm, lambda: server.stop("fast"), server.start
        )
    await _judge(url, phase, capsys)


async def test_a_frozen_server_loses_nothing_and_answers_503(outage_database, tmp_path, capsys):
    server, url, crm = outage_database
    with running_service(url, tmp_path, **SERVICE_SETTINGS) as (base, _proc):
        phase = await _phase("SIGSTOP", base, crm, server.freeze, server.thaw)
    await _judge(url, phase, capsys)
