"""Readiness: can we reach the database, promptly?"""

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def _select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def database_ready(engine: AsyncEngine, within_seconds: float = 2.0) -> bool:
    """False when the database refuses, fails or takes longer than `within_seconds` (a
    frozen server must not leave a load balancer waiting, nor be reported ready)."""
    try:
        await asyncio.wait_for(_select_one(engine), within_seconds)
    except Exception:
        return False
    return True
