"""Readiness: can we reach the database, promptly?"""

import asyncio

from app.core.driver import Database


async def _select_one(db: Database) -> None:
    async with db.autocommit() as con:
        await con.fetchval("SELECT 1")


async def database_ready(db: Database, within_seconds: float = 2.0) -> bool:
    """False when the database refuses, fails or takes longer than `within_seconds` (a
    frozen server must not leave a load balancer waiting, nor be reported ready)."""
    try:
        await asyncio.wait_for(_select_one(db), within_seconds)
    except Exception:
        return False
    return True
