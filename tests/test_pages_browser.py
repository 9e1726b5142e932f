"""The auditor's pages in a real browser (Debian's chromium through Playwright) against a
live server: offline API docs, the overview's numbers against the API's, an overdue
request highlighted, the record of processing listing the whole catalogue. Nothing any
page loads may come from anywhere but the service. Every page shown is checked with
axe-core (tests/browser.py). Screenshots: test-artifacts/screenshots.
"""

import asyncio
from datetime import UTC, datetime, timedelta

from app.web import session as pages
from tests.conftest import new_subject
from tests.test_consent import give

HIGHLIGHT = "rgb(253, 226, 225)"  # tr.overdue td in auditor.css


async def _arrange(live):
    """Subjects, consent, decisions and rights requests (one overdue) on the live server."""
    crm = await live.key("crm")
    async with live.client() as http:
        sid = (await http.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
        for body in (
            give(sid),
            give(sid, purpose="surveys"),
            {"subject_id": sid, "purpose": "surveys", "action": "withdrawn", "method": "email"},
        ):
            assert (
                await http.post("/v1/consent-events", json=body, headers=crm)
            ).status_code == 201
        for purpose in ("content_subscriptions", "surveys", "account_management"):
            await http.post(
                "/v1/decisions", json={"subject_id": sid, "purpose": purpose}, headers=crm
            )
        received = (datetime.now(UTC) - timedelta(days=75)).isoformat()
        late = await http.post(
            "/v1/rights-requests",
            json={"type": "access", "subject_id": sid, "received_at": received},
            headers=crm,
        )
        assert late.status_code == 201, late.text
        fresh = await http.post(
            "/v1/rights-requests", json={"type": "portability", "subject_id": sid}, headers=crm
        )
        assert fresh.status_code == 201
    return late.json()["id"], fresh.json()["id"]


async def _sign_in(page, live, auditor):
    await page.page.goto(f"{live.url}/v1/reports/overview")
    assert "/auditor/login" in page.page.url  # a browser without a session is sent to sign in
    await page.check_accessibility()
    await page.page.fill("#api_key", auditor["Authorization"].removeprefix("Bearer "))
    await page.page.click("button[type=submit]")
    await page.page.wait_for_selector("#open-requests")
    await page.check_accessibility()


async def _text(page, selector):
    return (await page.page.locator(selector).first.inner_text()).strip()


async def test_docs_render_offline(live_server, page):
    await page.page.goto(f"{live_server.url}/docs")
    await page.page.wait_for_selector(".opblock-summary", timeout=30000)
    operations = await page.page.locator(".opblock-summary-path").count()
    assert operations > 30
    assert "/v1/retention/sweep" in await page.page.content()
    await page.check_accessibility()
    await page.screenshot("docs")
    assert page.outside(live_server.url) == []
    await page.page.goto(f"{live_server.url}/redoc")  # removed: ReDoc calls its CDN
    await page.page.wait_for_selector(".opblock-summary", timeout=30000)
    await page.check_accessibility()
    assert page.page.url.endswith("/docs") and page.outside(live_server.url) == []


async def test_overview_numbers_equal_the_apis(live_server, page):
    late, fresh = await _arrange(live_server)
    auditor = await live_server.key("auditor")
    async with live_server.client() as http:
        # The sealer runs every half second: wait until it has sealed something, and read
        # the chain just before and just after the page, which must show a position between.
        for _ in range(100):
            sealed_before = (await http.get("/v1/audit/verify", headers=auditor)).json()
            if sealed_before["checked"] > 0:
                break
            await asyncio.sleep(0.1)
    await _sign_in(page, live_server, auditor)
    shown = {
        "open": int(await _text(page, "#open-requests")),
        "overdue": int(await _text(page, "#overdue-requests")),
        "allowed": int(await _text(page, "#decisions-allowed")),
        "denied": int(await _text(page, "#decisions-denied")),
        "position": int(await _text(page, "#chain-position")),
    }
    async with live_server.client() as http:
        open_items = [
            r
            for status in ("received", "identity_verified")
            for r in (
                await http.get(f"/v1/rights-requests?status={status}&limit=1000", headers=auditor)
            ).json()["items"]
        ]
        overdue = (await http.get("/v1/rights-requests?overdue=true", headers=auditor)).json()
        decisions = (await http.get("/v1/decisions?limit=1000", headers=auditor)).json()["items"]
        verify = (await http.get("/v1/audit/verify", headers=auditor)).json()
        subjects = (await http.get("/v1/subjects?limit=1000", headers=auditor)).json()["items"]
        events = [
            e
            for s in subjects
            for e in (
                await http.get(f"/v1/consent-events?subject_id={s['id']}", headers=auditor)
            ).json()["items"]
        ]
    assert shown["open"] == len(open_items)
    assert shown["overdue"] == len(overdue["items"]) >= 1
    assert shown["allowed"] == sum(d["allowed"] for d in decisions)
    assert shown["denied"] == sum(not d["allowed"] for d in decisions)
    assert verify["ok"] and sealed_before["checked"] > 0
    assert sealed_before["checked"] <= shown["position"] <= verify["checked"]
    month = datetime.now(UTC).strftime("%Y-%m")
    row = f"#consent-months tr[data-month='{month}']"
    assert int(await _text(page, f"{row} td.given")) == sum(
        e["action"] == "given" for e in events if e["occurred_at"][:7] == month
    )
    assert int(await _text(page, f"{row} td.withdrawn")) == sum(
        e["action"] == "withdrawn" for e in events if e["occurred_at"][:7] == month
    )
    # The overdue request is highlighted; the fresh one is not.
    late_cell = page.page.locator(f"tr[data-request-id='{late}'] td").first
    fresh_cell = page.page.locator(f"tr[data-request-id='{fresh}'] td").first
    style = "el => getComputedStyle(el).backgroundColor"
    assert await late_cell.evaluate(style) == HIGHLIGHT
    assert await fresh_cell.evaluate(style) != HIGHLIGHT
    assert "overdue" in await page.page.locator(f"tr[data-request-id='{late}']").inner_text()
    assert await page.page.locator("#consent-chart rect").count() == 36
    await page.screenshot("overview")
    assert page.outside(live_server.url) == []


async def test_ropa_page_lists_every_purpose_and_recipient(live_server, page):
    auditor = await live_server.key("auditor")
    await _sign_in(page, live_server, auditor)
    await page.page.goto(f"{live_server.url}/v1/reports/processing-activities")
    await page.page.wait_for_selector("#purposes")
    await page.check_accessibility()
    async with live_server.client() as http:
        purposes = (await http.get("/v1/purposes", headers=auditor)).json()["items"]
        recipients = (await http.get("/v1/recipients", headers=auditor)).json()["items"]
    shown_purposes = await page.page.locator("#purposes tr[data-purpose]").evaluate_all(
        "rows => rows.map(r => r.dataset.purpose)"
    )
    shown_recipients = await page.page.locator("#recipients tr[data-recipient]").evaluate_all(
        "rows => rows.map(r => r.dataset.recipient)"
    )
    assert sorted(shown_purposes) == sorted(p["key"] for p in purposes)
    assert sorted(shown_recipients) == sorted(r["key"] for r in recipients)
    for r in recipients:
        assert r["name"] in await _text(page, f"tr[data-recipient='{r['key']}']")
    await page.screenshot("processing-activities")
    assert page.outside(live_server.url) == []


async def test_a_signed_link_opens_the_overview(live_server, page):
    token = pages.issue_link_token(live_server.settings, role="auditor", minutes=5)
    # The "signed in" page moves on at once (a meta refresh): hold that move with a 204
    # (a browser stays where it is) long enough to check the page itself.
    overview = "**/v1/reports/overview"
    await page.page.route(overview, lambda route: route.fulfill(status=204))
    await page.page.goto(f"{live_server.url}/auditor/link/{token}")
    await page.page.get_by_role("heading", name="Signed in").wait_for()
    await page.check_accessibility()
    await page.page.unroute(overview)
    await page.page.click("text=Continue to the overview")
    await page.page.wait_for_selector("#open-requests")
    assert page.page.url.endswith("/v1/reports/overview")
    await page.check_accessibility()
    cookies = await page.page.context.cookies()
    session = next(c for c in cookies if c["name"] == pages.SESSION_COOKIE)
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    await page.page.click("text=Sign out")
    await page.page.wait_for_selector("#api_key")
    await page.check_accessibility()
    await page.page.goto(f"{live_server.url}/v1/reports/overview")
    assert "/auditor/login" in page.page.url
    await page.check_accessibility()
    assert page.outside(live_server.url) == []
