"""A live server and a real headless browser for page tests.

The live server runs the whole app (its own engine, background sealer included) with uvicorn
in a thread on 127.0.0.1, against a database of its own on the suite's PostgreSQL server:
what a browser does there is committed for real, so it must not leak into the rolled-back
world of the other tests. Pages are driven with Playwright through Debian's chromium.

Every page a browser test visits is checked with axe-core (`Page.check_accessibility`):
a serious or critical violation fails the test, and a test that leaves a page it visited
unchecked fails at teardown, so a new page cannot slip past the check.
"""

import asyncio
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, ensure_database
from app.main import create_app
from app.services.access import api_keys

# axe-core's impacts that fail a test (minor and moderate ones are reported, not fatal).
FAILING_IMPACTS = frozenset({"serious", "critical"})

CHROMIUM = os.environ.get("CONSENT_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
# Without the background-networking flags chromium tries to reach Google's hosts at start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """The running app: its base URL, its database URL and its settings."""

    url: str
    database_url: str
    settings: Settings
    _keys: dict[str, str] = field(default_factory=dict)

    async def key(self, role: str) -> dict[str, str]:
        """Authorization headers for a new committed key of `role` on the live database."""
        engine = create_engine(self.database_url, self.settings)
        try:
            async with create_sessionmaker(engine)() as session:
                key = await api_keys.create_key(
                    session, name=f"live-{role}-{uuid.uuid4().hex[:8]}", role=role
                )
                await session.commit()
        finally:
            await engine.dispose()
        return {"Authorization": f"Bearer {key}"}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20)


@pytest.fixture(scope="session")
async def live_server(database_url: str, test_settings: Settings) -> AsyncIterator[LiveServer]:
    name = f"consent_live_{uuid.uuid4().hex[:10]}"
    admin = make_url(database_url).set(drivername="postgresql", database="postgres")
    await ensure_database(admin.render_as_string(hide_password=False), name)
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, url)
    # One server for every browser test of the session: the refusals some of them provoke on
    # purpose (anonymous pages, an auditor's POST) must not add up to the failed-auth
    # throttle's 429 for the tests after them (the throttle is tested on its own).
    settings = test_settings.model_copy(
        update={"database_url": url, "auth_failures_allowed": 100_000}
    )
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        await asyncio.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", database_url=url, settings=settings)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)


def chromium_path() -> str | None:
    """Debian's chromium, or None (the caller skips with a clear message)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Page:
    """A fresh browser context and page, with every request URL it made and every document
    it showed (checked with axe or not yet)."""

    page: Any
    requested: list[str]
    visited: list[str] = field(default_factory=list)
    checked: set[int] = field(default_factory=set)  # indexes into `visited`

    def _navigated(self, frame: Any) -> None:
        if frame == self.page.main_frame:
            self.visited.append(frame.url)

    async def check_accessibility(self) -> None:
        """axe-core on the page as it is now; fails on any serious or critical violation.
        Playwright's evaluate runs axe through the DevTools protocol, which the page's CSP
        (no script at all) does not govern, so the test needs no `bypass_csp`."""
        from axe_playwright_python.async_playwright import Axe

        results = await Axe().run(self.page)
        failing = [v for v in results.response["violations"] if v["impact"] in FAILING_IMPACTS]
        report = "\n".join(
            f"{v['id']} ({v['impact']}, {len(v['nodes'])} elements): {v['help']}; e.g. "
            + "; ".join(", ".join(n["target"]) for n in v["nodes"][:3])
            for v in failing
        )
        self.checked.add(len(self.visited) - 1)  # checked, whatever the outcome
        assert not failing, f"axe on {self.page.url}:\n{report}"

    def unchecked(self) -> list[str]:
        """Documents the test showed and left without an axe check."""
        return [url for i, url in enumerate(self.visited) if i not in self.checked]

    def outside(self, base_url: str) -> list[str]:
        """Requests that left the live server (CDNs, fonts, trackers...)."""
        return [u for u in self.requested if not (u.startswith(base_url) or u.startswith("data:"))]

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    context = await browser.new_context()
    pg = await context.new_page()
    requested: list[str] = []
    pg.on("request", lambda request: requested.append(request.url))
    shown = Page(pg, requested)
    pg.on("framenavigated", shown._navigated)
    try:
        yield shown
        assert not shown.unchecked(), f"pages never checked with axe: {shown.unchecked()}"
    finally:
        await context.close()
