"""Double opt-in in a real browser: a live server (background sender included) e-mails a
local aiosmtpd server; the test follows the link from the received message and confirms
with the keyboard alone. axe-core checks every page shown (tests/browser.py)."""

import asyncio
import re
import threading
import time
import uuid

import pytest
import uvicorn
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from app.cli import migrate
from app.core.db import ensure_database
from app.main import create_app
from tests.browser import LiveServer, _free_port
from tests.smtp_server import SmtpServer

NOTICE = "Tick to receive white papers and blog posts from JI Group."
LINK = re.compile(r"https?://\S+?(/c/[A-Za-z0-9_.-]+)")


@pytest.fixture
async def mail_live(database_url, test_settings):
    """A live server of its own (its settings name the SMTP server), on its own database."""
    smtp = SmtpServer().start()
    name = f"consent_doi_{uuid.uuid4().hex[:10]}"
    admin = make_url(database_url).set(drivername="postgresql", database="postgres")
    await ensure_database(admin.render_as_string(hide_password=False), name)
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, url)
    port = _free_port()
    settings = test_settings.model_copy(
        update={
            "database_url": url,
            "smtp_url": SecretStr(smtp.url),
            "public_base_url": f"http://127.0.0.1:{port}",
        }
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "live server did not start"
        await asyncio.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", database_url=url, settings=settings), smtp
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        smtp.stop()


async def test_follow_the_emailed_link_and_confirm_with_the_keyboard(mail_live, page):
    live, smtp = mail_live
    website, crm = await live.key("website"), await live.key("crm")
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    body = {
        "email": email,
        "purpose": "content_subscriptions",
        "action": "given",
        "method": "web_form",
        "policy_version": "1",
        "notice_text": NOTICE,
        "confirm_by_email": True,
    }
    async with live.client() as http:
        r = await http.post("/v1/consent-events", json=body, headers=website)
        assert r.status_code == 202, r.text
        sid = r.json()["subject_id"]
        decision = {"subject_id": sid, "purpose": "content_subscriptions"}
        before = (await http.post("/v1/decisions", json=decision, headers=crm)).json()
        assert before["allowed"] is False
    for _ in range(200):  # the background sender runs every quarter second
        if smtp.inbox.messages:
            break
        await asyncio.sleep(0.05)
    [message] = smtp.inbox.messages
    link = LINK.search(message.get_body(("plain",)).get_content())
    assert link and link.group(0).startswith(live.url)

    await page.page.goto(link.group(0))
    await page.page.wait_for_selector("button")
    assert NOTICE in await page.page.content()
    await page.check_accessibility()
    await page.screenshot("double-opt-in-confirm")
    # Keyboard only: tab to the button (past the skip link) and press Enter.
    for _ in range(10):
        await page.page.keyboard.press("Tab")
        if await page.page.evaluate("document.activeElement.tagName") == "BUTTON":
            break
    async with page.page.expect_navigation():
        await page.page.keyboard.press("Enter")
    await page.page.wait_for_selector("[role=status]")
    assert "confirmed" in (await page.page.content()).lower()
    await page.check_accessibility()
    await page.screenshot("double-opt-in-confirmed")
    assert page.outside(live.url) == []
    async with live.client() as http:
        after = (await http.post("/v1/decisions", json=decision, headers=crm)).json()
        assert after["allowed"] is True, after
        events = (await http.get(f"/v1/consent-events?subject_id={sid}", headers=crm)).json()
    assert [e["action"] for e in events["items"]] == ["given"]
