"""The read replica's health as each worker sees it: does it answer, and how far behind the
primary is its replay? Reads that may lag go to it only while it answers and lags no more
than `CONSENT_READ_MAX_LAG_SECONDS`; otherwise they go to the primary.

The replay lag is measured on the standby itself, at most once a second per worker (reads
in between use the last answer), so that a read pays no extra round trip for it.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("consent_api.read_replica")

# How long one measurement stands for every read, readiness probe and scrape of a worker.
CHECK_EVERY_SECONDS = 1.0

# now() - pg_last_xact_replay_timestamp() alone grows while the primary is idle (nothing to
# replay, so the last replayed commit gets old): when the standby has replayed all the WAL it
# received it is caught up, lag 0. Otherwise the age of its last replayed commit is how far
# behind it is. A server that is not in recovery (a promoted standby) does not lag. No
# replayed commit yet since the standby started: nothing to measure from, taken as 0.
LAG = """
SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() IS NOT NULL
   AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
  ELSE greatest(coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0), 0)
END::float8
"""


@dataclass(frozen=True)
class ReplicaStatus:
    lag_seconds: float | None  # None: the replica did not answer
    max_lag_seconds: float
    error_class: str | None = None  # why it did not answer (the class only: no message)

    @property
    def usable(self) -> bool:
        return self.lag_seconds is not None and self.lag_seconds <= self.max_lag_seconds

    @property
    def reason(self) -> str | None:
        """Why reads go to the primary (no personal data), or None while the replica serves."""
        if self.lag_seconds is None:
            return "the read replica does not answer; reads go to the primary"
        if self.lag_seconds > self.max_lag_seconds:
            return (
                f"the read replica lags {self.lag_seconds:.1f} s (limit"
                f" {self.max_lag_seconds:g} s); reads go to the primary"
            )
        return None


class ReadReplica:
    """The replica's engine and its last measured status, per worker process."""

    def __init__(self, engine: AsyncEngine, max_lag_seconds: float, timeout: float) -> None:
        self.engine = engine
        self.max_lag_seconds = max_lag_seconds
        self.timeout = timeout  # a frozen replica must not hold reads up for long
        self._status: ReplicaStatus | None = None
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()

    async def status(self) -> ReplicaStatus:
        """The replica's status, measured at most once every CHECK_EVERY_SECONDS: concurrent
        callers wait for the one measurement in flight rather than each making their own."""
        if time.monotonic() - self._checked_at < CHECK_EVERY_SECONDS and self._status:
            return self._status
        async with self._lock:
            if time.monotonic() - self._checked_at < CHECK_EVERY_SECONDS and self._status:
                return self._status
            status = await self._measure()
            self._log_change(self._status, status)
            self._status, self._checked_at = status, time.monotonic()
            return status

    async def _measure(self) -> ReplicaStatus:
        try:
            lag = await asyncio.wait_for(self._lag(), self.timeout)
        except Exception as exc:  # down, refusing, frozen: reads go to the primary
            return ReplicaStatus(None, self.max_lag_seconds, type(exc).__name__)
        return ReplicaStatus(lag, self.max_lag_seconds)

    async def _lag(self) -> float:
        async with self.engine.connect() as conn:
            lag = (await conn.exec_driver_sql(LAG)).scalar_one()
            await conn.rollback()
        return float(lag)

    def _log_change(self, before: ReplicaStatus | None, now: ReplicaStatus) -> None:
        """One line when reads move to the primary, one when they move back: not one per read."""
        was_usable = before is None or before.usable
        if was_usable and not now.usable:
            log.warning(
                now.reason,
                extra={
                    "lag_seconds": now.lag_seconds,
                    "max_lag_seconds": now.max_lag_seconds,
                    "error_class": now.error_class,
                },
            )
        elif before is not None and not was_usable and now.usable:
            log.info(
                "the read replica answers within the lag limit again; reads that may lag go to it",
                extra={"lag_seconds": now.lag_seconds},
            )
