"""The webhooks delivery worker (it owns its transactions, so it lives beside the sync
worker, not among the services): one per database (a session-level advisory lock held
while it runs a pass), claiming due deliveries, sending them, recording outcomes.

A pass is a pipeline, not rounds: a call starts as soon as another ends (at most
`webhook_max_in_flight` per endpoint), so no call waits for the slowest of a batch. Claims
walk forward in feed order from a cursor per endpoint; when the walk reaches the end and
everything taken is stored, it starts again from the beginning (retries come due, and later
entries of subjects whose earlier one was still in flight when the walk passed them).

Per subject one call at a time, in feed order: a claim takes only a subject's oldest
waiting delivery, which stays `pending` until its outcome is stored, and the walk takes no
row twice before starting again from the beginning, which it does only once nothing taken
is still in flight or unstored.

Outcomes are stored in one UPDATE per `flush_every` answers or FLUSH_SECONDS, whichever
comes first, so a worker stopped mid-pass (crash, restart) sends again only the deliveries
that were in flight: answered but not yet stored, or not answered at all. Nothing is lost:
a delivery leaves `pending` only when its outcome is stored."""

import asyncio
import logging
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.models.base import utcnow
from app.services.webhooks import deliveries, endpoints
from app.services.webhooks.deliveries import Claimed, Outcome
from app.services.webhooks.endpoints import Signing
from app.services.webhooks.lock import single_worker
from app.services.webhooks.sender import Sender

log = logging.getLogger("consent_api.webhooks")
PASS_SECONDS = 30.0  # a pass gives the lock up after this (another worker may take over)
FLUSH_EVERY = 200  # answers stored per UPDATE and commit (each commit waits on the WAL)
FLUSH_SECONDS = 0.05  # ... or answers this old, so what a restart repeats stays small
Clock = Callable[[], datetime]


async def deliver_pending(
    maker: Any,
    sender: Sender,
    *,
    now: Clock = utcnow,
    flush_every: int = FLUSH_EVERY,
) -> int:
    """One pass: claim, send and record until nothing is due (or PASS_SECONDS).
    Returns how many calls were made; 0 if another worker holds the lock."""
    async with single_worker(maker.kw["bind"]) as got:
        if not got:
            return 0
        return await _Pass(maker, sender, now, flush_every).run(time.monotonic() + PASS_SECONDS)


class _Pass:
    """One pass's state. The database is used by one job at a time (a claim or a store),
    beside the calls in flight: a test's sessions share one connection."""

    def __init__(self, maker: Any, sender: Sender, now: Clock, flush_every: int) -> None:
        self.maker, self.sender, self.now, self.flush_every = maker, sender, now, flush_every
        self.settings = sender.settings
        self.queues: dict[str, deque[Claimed]] = defaultdict(deque)
        self.flying: Counter[str] = Counter()
        self.sends: set[asyncio.Task[Outcome]] = set()
        self.claimed: dict[uuid.UUID, Claimed] = {}  # taken, outcome not yet stored
        self.waiting: list[Outcome] = []  # answered, not yet stored
        self.waiting_since = 0.0
        self.signing: dict[str, Signing] = {}
        self.after: dict[str, int] = {}  # the walk's cursor per endpoint
        self.at_end = False  # the walk found nothing more after its cursors
        self.done = False  # a walk from the beginning found nothing to send
        self.db: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.wake = asyncio.Event()
        self.made = 0

    async def run(self, deadline: float) -> int:
        try:
            while True:
                if self.failure is not None:
                    raise self.failure
                self._start_sends()
                if self.db is None:
                    self.db = self._db_job(may_claim=time.monotonic() < deadline)
                if self.db is None and not self.sends:
                    return self.made
                await self._wait()
        finally:
            for task in [*self.sends, self.db]:
                if task is not None:
                    task.cancel()

    def _start_sends(self) -> None:
        limit = self.settings.webhook_max_in_flight
        for key, queue in self.queues.items():
            endpoint = self.signing.get(key)
            while queue and (endpoint is None or self.flying[key] < limit):
                c = queue.popleft()
                if endpoint is None:  # disabled by a 410: left pending for when it is enabled
                    del self.claimed[c.id]
                    continue
                self.flying[key] += 1
                self.made += 1
                task = asyncio.create_task(self.sender.deliver(endpoint, c))
                self.sends.add(task)
                task.add_done_callback(self._answered)

    def _db_job(self, *, may_claim: bool) -> asyncio.Task[None] | None:
        """The next thing to do in the database, if any: store, claim further, or start the
        walk again from the beginning."""
        idle = not self.sends and not any(self.queues.values())
        age = time.monotonic() - self.waiting_since
        if self.waiting and (idle or len(self.waiting) >= self.flush_every or age >= FLUSH_SECONDS):
            outcomes, self.waiting = self.waiting, []
            return self._job(self._store(outcomes))
        if not may_claim or self.done:
            return None
        queued = sum(len(q) for q in self.queues.values())
        if not self.at_end and queued <= self.settings.webhook_batch_size // 2:
            return self._job(self._claim(again=False))
        if self.at_end and idle and not self.claimed:
            self.after, self.at_end = {}, False
            return self._job(self._claim(again=True))
        return None

    def _job(self, work: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        task.add_done_callback(self._db_done)
        return task

    async def _wait(self) -> None:
        """Until a call or the database job ends, or the waiting answers are due to be stored."""
        timeout = None
        if self.waiting and self.db is None:
            timeout = max(0.0, FLUSH_SECONDS - (time.monotonic() - self.waiting_since))
        try:
            async with asyncio.timeout(timeout):
                await self.wake.wait()
        except TimeoutError:
            pass
        self.wake.clear()

    def _answered(self, task: asyncio.Task[Outcome]) -> None:
        self.sends.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            self.failure = task.exception()
        else:
            outcome = task.result()
            self.flying[self.claimed[outcome.id].endpoint_key] -= 1
            if not self.waiting:
                self.waiting_since = time.monotonic()
            self.waiting.append(outcome)
        self.wake.set()

    def _db_done(self, task: asyncio.Task[None]) -> None:
        self.db = None
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()
        self.wake.set()

    async def _claim(self, *, again: bool) -> None:
        n = self.settings.webhook_batch_size
        async with self.maker() as session:
            at = self.now()
            batch = await deliveries.claim(session, now=at, per_endpoint=n, after=self.after)
            if batch:
                self.signing = await endpoints.signing(session, self.settings, now=at)
            await session.commit()
        taken = 0
        for c in batch:  # in feed order per endpoint: the last one is the new cursor
            self.after[c.endpoint_key] = c.seq
            if c.endpoint_key in self.signing:  # not: its secret unreadable, it waits
                self.claimed[c.id] = c
                self.queues[c.endpoint_key].append(c)
                taken += 1
        per_endpoint = Counter(c.endpoint_key for c in batch)
        self.at_end = all(count < n for count in per_endpoint.values())
        self.done = again and not taken

    async def _store(self, outcomes: list[Outcome]) -> None:
        at = self.now()
        gone = sorted({self.claimed[o.id].endpoint_key for o in outcomes if o.status_code == 410})
        async with self.maker() as session:
            failed = await deliveries.record(session, self.settings, self.claimed, outcomes, now=at)
            await endpoints.disable(session, gone, "the receiver answered 410 Gone", at)
            await session.commit()
        for o in outcomes:
            del self.claimed[o.id]
        for key in gone:  # its queued deliveries are dropped, not sent
            self.signing.pop(key, None)
        if failed:
            log.warning("webhook deliveries failed for good", extra={"count": failed})
        if gone:
            log.warning("webhook endpoints disabled (410 Gone)", extra={"endpoints": gone})
