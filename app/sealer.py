"""The background sealer: every half second, seal what writers committed (one per database,
whatever the number of workers, thanks to the advisory lock in `seal_pending`)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.signing import Signer
from app.services.audit_chain import seal_pending

log = logging.getLogger("consent_api.sealer")
INTERVAL_SECONDS = 0.5


async def _loop(maker: async_sessionmaker[AsyncSession], signer: Signer) -> None:
    while True:
        try:
            async with maker() as session:
                sealed = await seal_pending(session, signer)
                await session.commit()
            if sealed:
                log.debug("sealed audit entries", extra={"count": sealed})
        except Exception as exc:  # keep sealing after a transient database error
            log.warning("sealing failed", extra={"error_class": type(exc).__name__})
        await asyncio.sleep(INTERVAL_SECONDS)


@contextlib.asynccontextmanager
async def running_sealer(
    maker: async_sessionmaker[AsyncSession], signer: Signer
) -> AsyncIterator[None]:
    task = asyncio.create_task(_loop(maker, signer))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
