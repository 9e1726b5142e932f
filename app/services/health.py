"""Readiness: can we reach the database?"""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def database_ready(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
