"""Async Alembic environment. The URL comes from the caller (`consent-api migrate`
sets it) or, failing that, from the settings (starting the embedded server)."""

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import app.models  # noqa: F401 - registers every table on the metadata
from app.core.config import get_settings
from app.core.db import pgbouncer_args, resolve_database_url, to_asyncpg_url

config = context.config
target_metadata = SQLModel.metadata
# Any fixed number: serialises concurrent `migrate` runs against one database.
MIGRATION_LOCK = 7_310_551


def _run(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    url = config.get_main_option("sqlalchemy.url") or await resolve_database_url(get_settings())
    engine = create_async_engine(
        to_asyncpg_url(url), poolclass=pool.NullPool, connect_args=pgbouncer_args(get_settings())
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
