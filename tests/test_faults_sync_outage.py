"""The MailChimp sync worker under a database outage (issue 14): PostgreSQL stopped (fast
shutdown) for 5 s in the middle of the first sync, then frozen (SIGSTOP) for 5 s in the
middle of following the change feed. The worker runs as `consent-api sync mailchimp` does
without `--once` and is never restarted: it must ride both out by itself, end with MailChimp
holding exactly what the gate allows, and repeat at most the one batch (the unit its saved
position advances by) that the outage interrupted.

Each outage is triggered by the fake MailChimp itself, while it is answering a call the
worker made, so it falls deterministically between a batch's calls and the recording of its
position: the worst place, where the batch must be repeated."""

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.core.db import create_engine, create_sessionmaker
from app.integrations.mailchimp_sync import MailchimpSync
from app.integrations.progress import Progress
from app.services.sync import state
from tests.fakes.mailchimp import FakeMailchimp
from tests.live_service import fresh_database
from tests.pg_server import ScratchPostgres, embedded_bin_dir
from tests.sync_support import allowed_subject, live_client, serve, withdraw  # noqa: F401
from tests.test_sync_mailchimp import LIST, expected_statuses, md5

pytestmark = pytest.mark.faults

PEOPLE = 160
WITHDRAWN = 30
BATCH = 10  # members per batch call, and feed entries per batch
CHUNK = 40  # members per recorded step of the first sync: 4 parallel calls of BATCH
OUTAGE_SECONDS = 5.0
SETTLE_LIMIT = 90.0  # generous: the assertion is on what is held, not on speed


class OutageAt:
    """ASGI wrapper around the fake: while answering the `nth` call that matches, first run
    `act` (stop or freeze the database) in a thread; the call is then served normally."""

    def __init__(self, app: Any, method: str, path_part: str, nth: int, act: Callable) -> None:
        self.app, self.method, self.path_part, self.nth, self.act = app, method, path_part, nth, act
        self.seen = 0
        self.fired = threading.Event()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == self.method
            and self.path_part in scope["path"]
        ):
            self.seen += 1
            if self.seen == self.nth:
                await asyncio.to_thread(self.act)
                self.fired.set()
        await self.app(scope, receive, send)


class Outage:
    """Which outage the fake triggers next (None: none)."""

    def __init__(self, fake_app: Any) -> None:
        self.fake_app = fake_app
        self.current: OutageAt | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await (self.current or self.fake_app)(scope, receive, send)


def pushes() -> tuple[Counter, dict]:
    """Per address, how often the worker pushed it (batch subscribe) or unsubscribed it."""
    sent: Counter = Counter()

    async def on_request(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith(f"/lists/{LIST}"):
            for member in json.loads(request.content)["members"]:
                sent[("subscribe", md5(member["email_address"]))] += 1
        elif request.method == "PATCH":
            if json.loads(request.content).get("status") == "unsubscribed":
                sent[("unsubscribe", request.url.path.rsplit("/", 1)[-1])] += 1

    return sent, {"request": [on_request]}


async def _until(check: Callable, what: str) -> None:
    deadline = time.monotonic() + SETTLE_LIMIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {SETTLE_LIMIT} s")
        await asyncio.sleep(0.2)


async def _through_outage(server: ScratchPostgres, trigger: OutageAt, mend: Callable, task):
    """Wait for the fake to break the database, keep it broken, mend it; the worker must
    still be running throughout (it never gives up on an outage)."""
    await asyncio.to_thread(trigger.fired.wait, SETTLE_LIMIT)
    assert trigger.fired.is_set(), "the worker never reached the call that breaks the database"
    await asyncio.sleep(OUTAGE_SECONDS)
    assert not task.done(), task.exception() if task.done() else None
    await asyncio.to_thread(mend)


async def _withdraw(engine, settings, people: list[dict]) -> None:
    async with live_client(engine, settings) as client:
        for p in people:
            for _ in range(20):  # the pool's connections predating the restart are dropped
                r = await withdraw(client, p["id"])
                if r.status_code != 503:
                    break
                await asyncio.sleep(0.2)
            assert r.status_code == 201, r.text


async def test_the_sync_worker_rides_out_a_stop_and_a_freeze_repeating_one_batch_at_most(
    serve, test_settings, capsys
):
    server = ScratchPostgres(embedded_bin_dir())
    engine = None
    try:
        server.start()
        url = await fresh_database(server.admin_url, "consent_sync_outage")
        fake = FakeMailchimp(list_ids=(LIST,))
        outage = Outage(fake.app)
        base = serve(outage)
        settings = test_settings.model_copy(
            update={
                "db_pool_timeout_seconds": 2,
                "db_command_timeout_seconds": 3,
                "db_connect_timeout_seconds": 2,
                "mailchimp_api_key": SecretStr(fake.api_key),
                "mailchimp_base_url": f"{base}/3.0",
                "mailchimp_list_id": LIST,
                "sync_batch_size": BATCH,
                "sync_max_connections": 4,
                "sync_backoff_seconds": 0.2,
                "sync_poll_seconds": 0.2,
            }
        )
        engine = create_engine(url, settings)
        async with live_client(engine, settings) as client:
            people = [await allowed_subject(client) for _ in range(PEOPLE)]
        assert len(await expected_statuses(engine)) == PEOPLE

        # 1. Stopped in the 2nd chunk of the first sync, after its 6th batch call arrived.
        outage.current = OutageAt(
            fake.app, "POST", f"/lists/{LIST}", nth=6, act=lambda: server.stop("fast")
        )
        sent, hooks = pushes()
        worker = MailchimpSync(
            settings,
            create_sessionmaker(engine),
            progress=Progress(interactive=False),
            event_hooks=hooks,
        )
        task = asyncio.create_task(worker.run_forever())
        try:
            await _through_outage(server, outage.current, server.start, task)

            async def first_sync_done() -> bool:
                async with create_sessionmaker(engine)() as session:
                    current = await state.load(session, worker.target)
                return current.initial_done and len(fake.statuses(LIST)) == PEOPLE

            await _until(first_sync_done, "the first sync after the restart")
            held = fake.statuses(LIST)
            assert held == await expected_statuses(engine)
            subscribed = [n for (kind, _), n in sent.items() if kind == "subscribe"]
            assert len(subscribed) == PEOPLE
            repeated_first = sum(n - 1 for n in subscribed)
            assert 0 < repeated_first <= CHUNK, repeated_first  # only the interrupted chunk

            # 2. Frozen while the feed's withdrawals are being pushed (the 5th unsubscribe).
            # The freeze waits until the test's own withdrawals are all in: a worker quick to
            # reach its 5th unsubscribe would otherwise freeze the server under them.
            all_withdrawn = threading.Event()

            def freeze_after_the_withdrawals() -> None:
                all_withdrawn.wait(60)
                server.freeze()

            outage.current = OutageAt(
                fake.app,
                "PATCH",
                f"/lists/{LIST}/members/",
                nth=5,
                act=freeze_after_the_withdrawals,
            )
            await _withdraw(engine, settings, people[:WITHDRAWN])
            all_withdrawn.set()
            await _through_outage(server, outage.current, server.thaw, task)
            gone = {md5(p["email"]) for p in people[:WITHDRAWN]}

            async def feed_done() -> bool:
                held = fake.statuses(LIST)
                return all(held[h] == "unsubscribed" for h in gone)

            await _until(feed_done, "the withdrawals after the freeze")
            await asyncio.sleep(1)  # a few more passes: nothing else may move
            held = fake.statuses(LIST)
            assert {h for h, s in held.items() if s == "subscribed"} == set(
                await expected_statuses(engine)
            )
            assert {h for h, s in held.items() if s == "unsubscribed"} == gone
            unsubscribed = {h: n for (kind, h), n in sent.items() if kind == "unsubscribe"}
            assert set(unsubscribed) == gone
            repeated_feed = sum(n - 1 for n in unsubscribed.values())
            assert 0 < repeated_feed <= BATCH, repeated_feed  # only the interrupted batch
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await worker.aclose()
        with capsys.disabled():
            print(
                "\nsync outage figures:",
                json.dumps(
                    {
                        "members": PEOPLE,
                        "first_sync_repeated_pushes": repeated_first,
                        "withdrawn": WITHDRAWN,
                        "feed_repeated_unsubscribes": repeated_feed,
                    }
                ),
            )
    finally:
        if engine is not None:
            await engine.dispose()
        server.close()
