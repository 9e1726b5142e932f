"""Fixtures for tests that need committed data seen by several connections (the change
feed's interleavings, the sync worker): a second database on the suite's server, migrated
once, emptied before each test; and the fake MailChimp/SurveyMonkey servers on free ports."""

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli import migrate
from app.core.config import Settings
from app.core.db import create_engine, ensure_database

# Catalogues seeded by the migrations stay; everything a test writes goes.
KEEP = {
    "alembic_version",
    "purposes",
    "recipients",
    "categories",
    "sources",
    "policies",
    "controller",
}


@pytest.fixture(scope="session")
async def committed_url(database_url: str) -> str:
    base = make_url(database_url)
    admin = base.set(database="postgres").render_as_string(hide_password=False)
    name = f"consent_sync_{uuid.uuid4().hex[:10]}"
    await ensure_database(admin, name)
    url = base.set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, url)
    return url


@pytest.fixture
async def committed_engine(
    committed_url: str, test_settings: Settings
) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(committed_url, test_settings)
    async with eng.begin() as c:
        tables = (
            await c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        ).scalars()
        names = ", ".join(f'"{t}"' for t in tables if t not in KEEP)
        await c.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    yield eng
    await eng.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread, on a free port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Any]:
    """`url = serve(app)`: runs the app until the test ends."""
    servers: list[ServerThread] = []

    def start(app: Any) -> str:
        server = ServerThread(app).__enter__()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.__exit__(None, None, None)


# --- a live API on the committed database, and subjects the gate allows -----------------

NOTICE = "Yes, e-mail me release news and training dates."


@contextlib.asynccontextmanager
async def live_client(engine: AsyncEngine, settings: Settings) -> AsyncIterator[Any]:
    """An httpx client on the app over `engine`'s database (every request commits), with a
    crm key in `client.crm`."""
    import httpx

    from app.core.db import create_sessionmaker
    from app.main import create_app
    from app.services.access import api_keys

    app = create_app(settings, engine=engine)
    async with create_sessionmaker(engine)() as session:
        key = await api_keys.create_key(session, name=f"crm-{uuid.uuid4().hex[:6]}", role="crm")
        await session.commit()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        client.crm = {"Authorization": f"Bearer {key}"}  # type: ignore[attr-defined]
        yield client


@pytest.fixture
async def live(committed_engine: AsyncEngine, test_settings: Settings) -> AsyncIterator[Any]:
    """`live_client` on the committed database."""
    async with live_client(committed_engine, test_settings) as client:
        yield client


async def allowed_subject(
    client: Any, *, email: str | None = None, name: str = "Ada Lovelace"
) -> dict:
    """A subject the gate allows for email_campaigns to MailChimp, written through the API."""
    crm = client.crm
    body = {
        "email": email or f"p-{uuid.uuid4().hex[:10]}@example.com",
        "name": name,
        "company": "Engines Ltd",
        "category": "customer_contact",
        "source": "enquiry",
    }
    s = (await client.post("/v1/subjects", json=body, headers=crm)).json()
    r = await client.put(
        f"/v1/subjects/{s['id']}/bases/email_campaigns", json={"basis": "consent"}, headers=crm
    )
    assert r.status_code == 200, r.text
    for purpose, recipient in (("email_campaigns", None), ("international_transfer", "mailchimp")):
        r = await client.post(
            "/v1/consent-events",
            headers=crm,
            json={
                "subject_id": s["id"],
                "purpose": purpose,
                "recipient": recipient,
                "action": "given",
                "method": "web_form",
                "policy_version": "1",
                "notice_text": NOTICE,
            },
        )
        assert r.status_code == 201, r.text
    return s


async def erase(client: Any, subject_id: str) -> None:
    crm = client.crm
    req = (
        await client.post(
            "/v1/rights-requests", json={"type": "erasure", "subject_id": subject_id}, headers=crm
        )
    ).json()
    await client.post(
        f"/v1/rights-requests/{req['id']}/verify-identity", json={"method": "email"}, headers=crm
    )
    r = await client.post(f"/v1/rights-requests/{req['id']}/complete", json={}, headers=crm)
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text


async def withdraw(client: Any, subject_id: str, purpose: str = "email_campaigns") -> Any:
    """The person withdraws consent (by e-mail), through the API: the response."""
    body = {"subject_id": subject_id, "purpose": purpose, "action": "withdrawn", "method": "email"}
    return await client.post("/v1/consent-events", headers=client.crm, json=body)
