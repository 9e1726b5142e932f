"""The webhooks delivery worker (it owns its transactions, so it lives beside the sync
worker, not among the services): one per database (a session-level advisory lock held
while it runs a pass), claiming due deliveries, sending them, recording outcomes.

Outcomes are stored every `flush_every` answers, so a worker stopped mid-pass (crash,
restart) sends again only the deliveries that were in flight: answered but not yet stored,
or not answered at all. Nothing is lost: a delivery leaves `pending` only when its outcome
is stored."""

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.core.config import Settings
from app.models.base import utcnow
from app.services.webhooks import deliveries, endpoints
from app.services.webhooks.deliveries import Claimed, Outcome
from app.services.webhooks.lock import single_worker
from app.services.webhooks.sender import Sender

log = logging.getLogger("consent_api.webhooks")
PASS_SECONDS = 30.0  # a pass gives the lock up after this (another worker may take over)
Clock = Callable[[], datetime]


async def deliver_pending(
    maker: Any,
    sender: Sender,
    *,
    now: Clock = utcnow,
    flush_every: int = 50,
) -> int:
    """One pass: rounds of claim, send, record until nothing is due (or PASS_SECONDS).
    Returns how many calls were made; 0 if another worker holds the lock."""
    total = 0
    async with single_worker(maker.kw["bind"]) as got:
        if not got:
            return 0
        started = time.monotonic()
        while time.monotonic() - started < PASS_SECONDS:
            made = await _round(maker, sender, now, flush_every)
            total += made
            if not made:
                break
    return total


async def _round(maker: Any, sender: Sender, now: Clock, flush_every: int) -> int:
    settings = sender.settings
    async with maker() as session:
        at = now()
        batch = await deliveries.claim(session, now=at, per_endpoint=settings.webhook_batch_size)
        signing = await endpoints.signing(session, settings, now=at) if batch else {}
        await session.commit()
    if not batch:
        return 0
    claimed = {c.id: c for c in batch}
    waiting: list[Outcome] = []
    async for outcome in sender.send(signing, batch):
        waiting.append(outcome)
        if len(waiting) >= flush_every:
            await _store(maker, settings, claimed, waiting, now())
            waiting = []
    await _store(maker, settings, claimed, waiting, now())
    return len(batch)


async def _store(
    maker: Any,
    settings: Settings,
    claimed: dict[uuid.UUID, Claimed],
    outcomes: list[Outcome],
    at: datetime,
) -> None:
    if not outcomes:
        return
    gone = sorted({claimed[o.id].endpoint_key for o in outcomes if o.status_code == 410})
    async with maker() as session:
        failed = await deliveries.record(session, settings, claimed, outcomes, now=at)
        await endpoints.disable(session, gone, "the receiver answered 410 Gone", at)
        await session.commit()
    if failed:
        log.warning("webhook deliveries failed for good", extra={"count": failed})
    if gone:
        log.warning("webhook endpoints disabled (410 Gone)", extra={"endpoints": gone})
