"""The MailChimp worker survives crashes, 429 storms, 500s and dropped connections, and a
restart repeats at most the batch a crash interrupted."""

import hashlib
from collections import Counter

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from tests.sync_support import (  # noqa: F401
    allowed_subject,
    committed_engine,
    committed_url,
    erase,
    live,
    serve,
    withdraw,
)
from tests.test_sync_mailchimp import LIST, expected_statuses, fake, md5, run_once, worker_for  # noqa: F401


class Crash(Exception):
    """The worker process dying after the N-th answer (the remote applied the call)."""


def recorded(crash_after=None):
    """Event hooks logging each push this run sends (client side: a run's own calls), and
    crashing after the N-th answer to a push."""
    sent, seen = [], {"n": 0}

    async def on_request(request):
        if request.method != "GET":  # reading back is not a push
            sent.append(
                (request.method, request.url.path, hashlib.sha256(request.content).hexdigest())
            )

    async def on_response(response):
        if response.request.method == "GET" or crash_after is None:
            return
        seen["n"] += 1
        if seen["n"] >= crash_after:
            raise Crash(f"crashed after {crash_after} calls")

    return sent, {"request": [on_request], "response": [on_response]}


async def assert_equal_sides(fake, engine):
    held = fake.statuses(LIST)
    subscribed = {h for h, s in held.items() if s == "subscribed"}
    assert subscribed == set(await expected_statuses(engine))


async def test_a_crash_then_a_restart_leaves_both_sides_equal_repeating_only_that_batch(
    live, fake, worker_for, committed_engine
):
    people = [await allowed_subject(live) for _ in range(45)]
    # First sync: 40 members a chunk (4 calls of 10); crash on the 2nd answer of chunk 1.
    first, hooks = recorded(crash_after=2)
    with pytest.raises((Crash, ExceptionGroup)):
        await run_once(worker_for, event_hooks=hooks)
    second, hooks = recorded()
    await run_once(worker_for, event_hooks=hooks)
    repeated = [c for c in second if c in set(first)]
    assert 0 < len(repeated) <= 4  # only the interrupted chunk's calls
    assert len(second) == 5  # that chunk again, then the last one
    await assert_equal_sides(fake, committed_engine)

    # The feed: withdrawals and erasures, 10 entries a batch; crash on the 3rd answer.
    for p in people[:8]:
        r = await withdraw(live, p["id"])
        assert r.status_code == 201
    for p in people[8:11]:
        await erase(live, p["id"])
    crashed, hooks = recorded(crash_after=3)
    with pytest.raises((Crash, ExceptionGroup)):
        await run_once(worker_for, event_hooks=hooks)
    resumed, hooks = recorded()
    await run_once(worker_for, event_hooks=hooks)
    repeated = [c for c in resumed if c in set(crashed)]
    assert 0 < len(repeated) <= 10  # at most the interrupted batch (10 feed entries)
    assert len(resumed) == len(set(resumed))  # and nothing twice within a run
    await assert_equal_sides(fake, committed_engine)
    held = fake.statuses(LIST)
    assert all(held[md5(p["email"])] == "unsubscribed" for p in people[:8])
    assert all(md5(p["email"]) not in held for p in people[8:11])
    # Every call is idempotent: the repeats changed nothing (no errors were answered).
    assert all(c.status < 400 or c.status == 404 for c in fake.faults.calls)


async def test_a_storm_of_429s_500s_and_dropped_connections_is_survived(
    live, fake, worker_for, committed_engine
):
    people = [await allowed_subject(live) for _ in range(30)]
    fake.faults.fail_next(25, 429, "0")
    fake.faults.fail_next(3, 500)
    fake.faults.drop_next(2)
    fake.faults.drop_next(2, after_apply=True)
    fake.faults.every = (5, ("status", 503, None))
    overrides = {"sync_max_attempts": 40}
    await run_once(worker_for, overrides)
    await assert_equal_sides(fake, committed_engine)
    for p in people[:5]:
        await withdraw(live, p["id"])
    fake.faults.fail_next(20, 429, "0")
    await run_once(worker_for, overrides)
    await assert_equal_sides(fake, committed_engine)
    statuses = Counter(c.status for c in fake.faults.calls)
    assert statuses[429] == 45 and statuses[500] == 3 and statuses[599] == 4
    assert fake.faults.max_in_flight <= 10
    async with committed_engine.connect() as c:
        position = (await c.execute(text("SELECT feed_after FROM sync_state"))).scalar()
        head = (await c.execute(text("SELECT max(seq) FROM changes"))).scalar()
    assert position == head


async def test_retries_exhausted_stop_the_batch_without_advancing(
    live, fake, worker_for, committed_engine
):
    from app.integrations.http import RemoteUnavailable

    await allowed_subject(live)
    fake.faults.fail_next(100, 500)
    with pytest.raises((RemoteUnavailable, ExceptionGroup)):
        await run_once(worker_for, {"sync_max_attempts": 3})
    async with committed_engine.connect() as c:
        done = (await c.execute(text("SELECT initial_done FROM sync_state"))).scalar()
    assert not done
    fake.faults.plan.clear()
    await run_once(worker_for)
    await assert_equal_sides(fake, committed_engine)


async def test_a_single_run_without_its_database_ends_in_one_line_that_nothing_is_lost(
    test_settings,
):
    from app.integrations.worker import SyncFailed, run
    from tests.pg_server import free_port

    settings = test_settings.model_copy(
        update={
            "mailchimp_api_key": SecretStr("k-us1"),
            "mailchimp_list_id": LIST,
            "db_connect_timeout_seconds": 2,
        }
    )
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/consent"
    with pytest.raises(SyncFailed) as failed:
        await run("mailchimp", settings, nowhere, once=True)
    assert str(failed.value) == (
        "the database is unavailable; run again later, the sync resumes where it stopped"
    )
