"""Background tasks of each worker: the audit sealer and the change-feed sequencer, every
half second (one of each per database whatever the number of workers, thanks to their
advisory locks), the gate's clock every 15 s (one per database too: it feeds each moment at
which time alone changes the gate's answer within a minute, and catches up on start after
a stop across moments), a minutely purge of idempotency keys past their 24 hours (stored replies
echo personal data), and an hourly run creating the coming months' partitions
(advisory-locked as well). The e-mail outbox's sender every quarter second (a person is
waiting for the message) and the double opt-in expiry every minute, each one per database
under an advisory lock too; and the webhooks' delivery worker (one per database too)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings, current_settings
from app.core.idempotency import purge_expired
from app.core.signing import Signer
from app.integrations.webhooks_worker import deliver_pending
from app.models.base import utcnow
from app.services.audit.chain import seal_pending
from app.services.changes import clock
from app.services.changes.feed import sequence_pending
from app.services.consent.double_opt_in import expire_due
from app.services.mail import outbox
from app.services.mail.sender import send_batch
from app.services.partitions import ensure_partitions
from app.services.webhooks.sender import Sender

log = logging.getLogger("consent_api.sealer")
SEAL_SECONDS = 0.5
PURGE_SECONDS = 60.0
PARTITION_SECONDS = 3600.0
CLOCK_SECONDS = 15.0
MAIL_SECONDS = 0.25
MAIL_BATCHES_PER_RUN = 20
EXPIRY_SECONDS = 60.0
PENDING_MOMENTS = Gauge(
    "consent_api_gate_moments_pending",
    "Moments at which time alone changed the gate's answer, passed but not yet in the"
    " change feed (as seen by this worker's last clock run)",
)


LAST_SUCCESS = Gauge(
    "consent_background_last_success_timestamp_seconds",
    "When each background task of this worker last finished a run without error",
    ["task"],
)
MAX_BACKOFF_SECONDS = 60.0


async def supervised(
    name: str,
    step: Callable[[], Awaitable[None]],
    interval: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run `step` every `interval` seconds, for ever. A failure is logged with its traceback
    and the step tried again after 2, 4, 8 ... seconds (at most a minute; a database that is
    down is not hammered), back to `interval` after the first success."""
    failures = 0
    while True:
        try:
            await step()
        except Exception:
            failures += 1
            log.warning(f"{name} failed; retried", exc_info=True, extra={"failures": failures})
        else:
            failures = 0
            LAST_SUCCESS.labels(task=name).set_to_current_time()
        await sleep(min(2.0**failures, MAX_BACKOFF_SECONDS) if failures else interval)


async def _seal(maker: async_sessionmaker[AsyncSession], signer: Signer) -> None:
    async with maker() as session:
        sealed = await seal_pending(session, signer)
        await session.commit()
    # Change-feed positions for committed rows (readers also sequence on demand).
    async with maker() as session:
        await sequence_pending(session)
        await session.commit()
    if sealed:
        log.debug("sealed audit entries", extra={"count": sealed})


async def _purge(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session:
        await purge_expired(session)
        await session.commit()


async def _partitions(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session:
        created = await ensure_partitions(session)
        await session.commit()
    if created:
        log.info("created partitions", extra={"count": created})


async def clock_tick(maker: async_sessionmaker[AsyncSession], now: datetime | None = None) -> int:
    """One run of the gate's clock at `now` (default: the time): feeds what has passed,
    then sets the gauge of what has passed and is still not fed. Returns how many it fed."""
    async with maker() as session:
        fed = await clock.feed_due(session, now=now or utcnow())
        await session.commit()
    async with maker() as session:
        PENDING_MOMENTS.set(await clock.pending(session, now=now or utcnow()))
    if fed:
        log.info("fed gate moments", extra={"count": fed})
    return fed


async def send_due(
    maker: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime | None = None
) -> int:
    """One batch of the e-mail outbox (nothing without CONSENT_SMTP_URL); how many sent."""
    if settings.smtp_url is None:
        return 0
    async with maker() as session:
        sent = await send_batch(session, settings, now or utcnow())
        await session.commit()
    if sent:
        log.info("sent e-mails", extra={"count": sent})
    return sent


async def _mail(maker: async_sessionmaker[AsyncSession]) -> None:
    """Send what is due, batch after batch while batches come back full."""
    settings = current_settings()
    for _ in range(MAIL_BATCHES_PER_RUN):
        if await send_due(maker, settings) < outbox.BATCH:
            return


async def _expire_double_opt_ins(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session:
        expired = await expire_due(session)
        await session.commit()
    if expired:
        log.info("expired double opt-ins", extra={"count": expired})


@contextlib.asynccontextmanager
async def running_background_tasks(
    maker: async_sessionmaker[AsyncSession], signer: Signer
) -> AsyncIterator[None]:
    async def clock() -> None:
        await clock_tick(maker)

    # Webhooks out: one delivery worker per database (its advisory lock), its HTTP clients
    # kept between passes (keep-alive connections to each endpoint).
    sender = Sender(current_settings())

    async def webhooks() -> None:
        await deliver_pending(maker, sender)

    tasks = [
        asyncio.create_task(supervised("sealer", lambda: _seal(maker, signer), SEAL_SECONDS)),
        asyncio.create_task(supervised("webhooks", webhooks, sender.settings.webhook_poll_seconds)),
        asyncio.create_task(supervised("clock", clock, CLOCK_SECONDS)),
        asyncio.create_task(supervised("idempotency purge", lambda: _purge(maker), PURGE_SECONDS)),
        asyncio.create_task(
            supervised("partitions", lambda: _partitions(maker), PARTITION_SECONDS)
        ),
        asyncio.create_task(supervised("mail", lambda: _mail(maker), MAIL_SECONDS)),
        asyncio.create_task(
            supervised(
                "double opt-in expiry", lambda: _expire_double_opt_ins(maker), EXPIRY_SECONDS
            )
        ),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await sender.aclose()
