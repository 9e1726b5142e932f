"""Background tasks of each worker: the audit sealer and the change-feed sequencer, every
half second (one of each per database whatever the number of workers, thanks to their
advisory locks), the gate's clock every 15 s (one per database too: it feeds each moment at
which time alone changes the gate's answer within a minute, and catches up on start after
a stop across moments), a minutely purge of idempotency keys past their 24 hours (stored replies
echo personal data), and an hourly run creating the coming months' partitions
(advisory-locked as well)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.idempotency import purge_expired
from app.core.signing import Signer
from app.models.base import utcnow
from app.services.audit.chain import seal_pending
from app.services.changes import clock
from app.services.changes.feed import sequence_pending
from app.services.partitions import ensure_partitions

log = logging.getLogger("consent_api.sealer")
INTERVAL_SECONDS = 0.5
PURGE_SECONDS = 60.0
PARTITION_SECONDS = 3600.0
CLOCK_SECONDS = 15.0
PENDING_MOMENTS = Gauge(
    "consent_api_gate_moments_pending",
    "Moments at which time alone changed the gate's answer, passed but not yet in the"
    " change feed (as seen by this worker's last clock run)",
)


async def _loop(maker: async_sessionmaker[AsyncSession], signer: Signer) -> None:
    while True:
        try:
            async with maker() as session:
                sealed = await seal_pending(session, signer)
                await session.commit()
            # Change-feed positions for committed rows (readers also sequence on demand).
            async with maker() as session:
                await sequence_pending(session)
                await session.commit()
            if sealed:
                log.debug("sealed audit entries", extra={"count": sealed})
        except Exception as exc:  # keep sealing after a transient database error
            log.warning("sealing failed", extra={"error_class": type(exc).__name__})
        await asyncio.sleep(INTERVAL_SECONDS)


async def _purge_loop(maker: async_sessionmaker[AsyncSession]) -> None:
    while True:
        await asyncio.sleep(PURGE_SECONDS)
        try:
            async with maker() as session:
                await purge_expired(session)
                await session.commit()
        except Exception as exc:
            log.warning("idempotency purge failed", extra={"error_class": type(exc).__name__})


async def _partition_loop(maker: async_sessionmaker[AsyncSession]) -> None:
    while True:
        try:
            async with maker() as session:
                created = await ensure_partitions(session)
                await session.commit()
            if created:
                log.info("created partitions", extra={"count": created})
        except Exception as exc:
            log.warning("partition upkeep failed", extra={"error_class": type(exc).__name__})
        await asyncio.sleep(PARTITION_SECONDS)


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


async def _clock_loop(maker: async_sessionmaker[AsyncSession]) -> None:
    while True:
        try:
            await clock_tick(maker)
        except Exception as exc:  # keep the clock running after a transient database error
            log.warning("gate clock failed", extra={"error_class": type(exc).__name__})
        await asyncio.sleep(CLOCK_SECONDS)


@contextlib.asynccontextmanager
async def running_background_tasks(
    maker: async_sessionmaker[AsyncSession], signer: Signer
) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(_loop(maker, signer)),
        asyncio.create_task(_purge_loop(maker)),
        asyncio.create_task(_partition_loop(maker)),
        asyncio.create_task(_clock_loop(maker)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
