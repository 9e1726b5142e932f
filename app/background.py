"""Background tasks of each worker: the audit sealer and the change-feed sequencer, every
half second (one of each per database whatever the number of workers, thanks to their
advisory locks), a minutely purge of idempotency keys past their 24 hours (stored replies
echo personal data), and an hourly run creating the coming months' partitions
(advisory-locked as well)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.idempotency import purge_expired
from app.core.signing import Signer
from app.services.audit.chain import seal_pending
from app.services.changes.feed import sequence_pending
from app.services.partitions import ensure_partitions

log = logging.getLogger("consent_api.sealer")
INTERVAL_SECONDS = 0.5
PURGE_SECONDS = 60.0
PARTITION_SECONDS = 3600.0


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


@contextlib.asynccontextmanager
async def running_background_tasks(
    maker: async_sessionmaker[AsyncSession], signer: Signer
) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(_loop(maker, signer)),
        asyncio.create_task(_purge_loop(maker)),
        asyncio.create_task(_partition_loop(maker)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
