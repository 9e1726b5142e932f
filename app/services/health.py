"""Readiness and the backlogs an operator watches: can we reach the database, promptly, and
are the audit sealer and the feed sequencer keeping up?"""

import asyncio
from dataclasses import dataclass

from app.core.driver import Database

# Both counts read partial indexes (`position IS NULL`, `seq IS NULL`): cheap however large
# the tables, as long as the sealer and the sequencer keep up.
BACKLOG = """
SELECT (SELECT count(*) FROM audit_entries WHERE position IS NULL) AS unsealed,
       (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(at)), 0)
          FROM audit_entries WHERE position IS NULL) AS seal_lag,
       (SELECT count(*) FROM changes WHERE seq IS NULL) AS unsequenced
"""
SEAL_LAG = """
SELECT coalesce(extract(epoch FROM clock_timestamp() - min(at)), 0)
FROM audit_entries WHERE position IS NULL
"""


@dataclass(frozen=True)
class Backlog:
    unsealed: int  # audit entries not yet in the hash chain
    seal_lag_seconds: float  # age of the oldest of them (0: none)
    unsequenced: int  # change-feed entries committed but not yet given a position


async def backlog(db: Database) -> Backlog:
    async with db.autocommit() as con:
        row = await con.fetchrow(BACKLOG)
    return Backlog(int(row["unsealed"]), float(row["seal_lag"]), int(row["unsequenced"]))


async def _seal_lag(db: Database) -> float:
    async with db.autocommit() as con:
        return float(await con.fetchval(SEAL_LAG))


async def seal_lag(db: Database, within_seconds: float = 2.0) -> float | None:
    """The age of the oldest unsealed audit entry in seconds (0: none), or None when the
    database refuses, fails or takes longer than `within_seconds` (a frozen server must not
    leave a load balancer waiting, nor be reported ready)."""
    try:
        return await asyncio.wait_for(_seal_lag(db), within_seconds)
    except Exception:
        return None
