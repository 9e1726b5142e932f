"""Readiness: can we reach the database?"""

from app.core.driver import Database


async def database_ready(db: Database) -> bool:
    try:
        async with db.autocommit() as con:
            await con.fetchval("SELECT 1")
    except Exception:
        return False
    return True
