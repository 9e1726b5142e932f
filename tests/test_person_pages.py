"""The person's pages in a real headless browser (Debian's chromium through Playwright),
against a live server, each page checked with axe-core (tests/browser.py). Screenshots go
to test-artifacts/screenshots/."""

from app.web.dates import uk_date
from tests.browser import LiveServer, Page
from tests.conftest import new_subject

NOTICE = "Tick to receive white papers and blog posts from JI Group."


async def _subject_with_consent(live: LiveServer, crm: dict[str, str]) -> tuple[str, dict]:
    async with live.client() as http:
        s = (await http.post("/v1/subjects", json=new_subject(), headers=crm)).json()
        sid = s["id"]
        await http.put(
            f"/v1/subjects/{sid}/bases/content_subscriptions",
            json={"basis": "consent"},
            headers=crm,
        )
        await http.put(
            f"/v1/subjects/{sid}/bases/email_campaigns",
            json={"basis": "legitimate_interests", "lia_ref": "LIA-1"},
            headers=crm,
        )
        given = {
            "subject_id": sid,
            "purpose": "content_subscriptions",
            "action": "given",
            "method": "web_form",
            "policy_version": "1",
            "notice_text": NOTICE,
        }
        r = await http.post("/v1/consent-events", json=given, headers=crm)
        assert r.status_code == 201, r.text
        r = await http.post(
            f"/v1/subjects/{sid}/links", json={"purpose": "content_subscriptions"}, headers=crm
        )
        assert r.status_code == 200, r.text
        return sid, r.json()


def _on_live(live: LiveServer, url: str) -> str:
    """The link as issued names CONSENT_PUBLIC_BASE_URL; the test server has its own port."""
    return live.url + "/" + url.split("/", 3)[3]


async def _decision(live: LiveServer, crm: dict[str, str], sid: str, purpose: str) -> dict:
    async with live.client() as http:
        r = await http.post(
            "/v1/decisions", json={"subject_id": sid, "purpose": purpose}, headers=crm
        )
        return r.json()


def _errors(page: Page) -> list[str]:
    messages: list[str] = []
    page.page.on("console", lambda m: messages.append(m.text) if m.type == "error" else None)
    return messages


async def test_withdrawing_on_the_preference_page_flips_the_decision(
    live_server: LiveServer, page: Page
):
    crm = await live_server.key("crm")
    sid, links = await _subject_with_consent(live_server, crm)
    assert (await _decision(live_server, crm, sid, "content_subscriptions"))["allowed"] is True
    console_errors = _errors(page)
    response = await page.page.goto(_on_live(live_server, links["preference_url"]))
    assert response.status == 200
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "noindex" in response.headers["x-robots-tag"]
    purpose = page.page.locator("#purpose-content_subscriptions")
    await purpose.get_by_text("You agreed on").wait_for()
    await page.check_accessibility()
    await page.screenshot("person-preferences-before")
    # Keyboard only: focus the button and press Enter.
    button = purpose.get_by_role("button", name="Withdraw my consent")
    await button.focus()
    await page.page.keyboard.press("Enter")
    await page.page.get_by_role("status").wait_for()
    assert "your consent is withdrawn" in await page.page.get_by_role("status").inner_text()
    assert "You said no on" in await purpose.inner_text()
    await page.check_accessibility()
    await page.screenshot("person-preferences-withdrawn")
    decision = await _decision(live_server, crm, sid, "content_subscriptions")
    assert decision["allowed"] is False and decision["reasons"] == ["consent_withdrawn"]
    # Labels: every form control the person types into has one.
    assert await page.page.get_by_label("What would you like us to do?").count() == 1
    assert page.outside(live_server.url) == []
    assert console_errors == []  # a CSP violation would show here


async def test_one_click_unsubscribe_flips_the_gate(live_server: LiveServer, page: Page):
    crm = await live_server.key("crm")
    sid, links = await _subject_with_consent(live_server, crm)
    url = _on_live(live_server, links["unsubscribe_url"])
    # A person (or a mail scanner) opening the link changes nothing.
    await page.page.goto(url)
    await page.page.get_by_role("button", name="Unsubscribe me").wait_for()
    await page.check_accessibility()
    await page.screenshot("person-unsubscribe-confirm")
    assert (await _decision(live_server, crm, sid, "email_campaigns"))["allowed"] is True
    # The mailbox provider's one-click POST, exactly as RFC 8058 section 3.2 describes it.
    async with live_server.client() as http:
        r = await http.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert r.status_code == 200 and "location" not in r.headers
    decision = await _decision(live_server, crm, sid, "email_campaigns")
    assert decision["allowed"] is False and "marketing_opt_out" in decision["reasons"]
    # The button on the page does the same, and repeating is harmless.
    await page.page.get_by_role("button", name="Unsubscribe me").click()
    await page.page.get_by_role("heading", name="You are unsubscribed").wait_for()
    await page.check_accessibility()
    await page.screenshot("person-unsubscribed")
    assert page.outside(live_server.url) == []


async def test_a_tampered_token_changes_nothing(live_server: LiveServer, page: Page):
    crm = await live_server.key("crm")
    sid, links = await _subject_with_consent(live_server, crm)
    body, mac = links["preference_url"].rsplit("/", 1)[1].split(".")
    tampered = f"{live_server.url}/p/{body}.{mac[:-4]}{'AAAA' if mac[-4:] != 'AAAA' else 'BBBB'}"
    response = await page.page.goto(tampered)
    assert response.status == 404
    await page.page.get_by_role("heading", name="This link is not valid").wait_for()
    await page.check_accessibility()
    await page.screenshot("person-tampered-link")
    u_body, u_mac = links["unsubscribe_url"].rsplit("/", 1)[1].split(".")
    async with live_server.client() as http:
        r = await http.post(f"/u/{u_body}.{u_mac[::-1]}", data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 404
        r = await http.post(
            f"/p/{body}.{mac[::-1]}/withdraw",
            data={"csrf": "x", "purpose": "content_subscriptions"},
        )
        assert r.status_code == 404
        state = await http.get(f"/v1/subjects/{sid}/consents", headers=crm)
        assert [i["status"] for i in state.json()["items"]] == ["given"]
    for purpose in ("content_subscriptions", "email_campaigns"):
        assert (await _decision(live_server, crm, sid, purpose))["allowed"] is True


async def test_a_rights_request_from_the_page_shows_its_deadline(
    live_server: LiveServer, page: Page
):
    """The person starts a request with the form; the table then shows it with the date we
    answer by, and an earlier request already completed with no date at all."""
    crm = await live_server.key("crm")
    sid, links = await _subject_with_consent(live_server, crm)
    async with live_server.client() as http:
        done = await http.post(
            "/v1/rights-requests",
            json={"type": "access", "subject_id": sid, "received_at": "2026-01-31T10:00:00Z"},
            headers=crm,
        )
        rid = done.json()["id"]
        await http.post(
            f"/v1/rights-requests/{rid}/verify-identity", json={"method": "email"}, headers=crm
        )
        r = await http.post(f"/v1/rights-requests/{rid}/complete", json={}, headers=crm)
        assert r.status_code == 200, r.text
    await page.page.goto(_on_live(live_server, links["preference_url"]))
    await page.check_accessibility()
    await page.page.get_by_label("What would you like us to do?").select_option("erasure")
    await page.page.get_by_label("Anything we should know (optional)").fill("All of it, please.")
    await page.page.get_by_role("button", name="Send my request").click()
    await page.page.get_by_role("status").wait_for()
    await page.check_accessibility()
    await page.screenshot("person-rights-request")
    rows = page.page.locator("table tbody tr")
    assert await rows.count() == 2
    async with live_server.client() as http:
        listed = await http.get(
            "/v1/rights-requests", params={"subject_id": sid, "type": "erasure"}, headers=crm
        )
    due = uk_date(listed.json()["items"][0]["due_at"])
    erasure = await rows.nth(0).inner_text()
    assert "Erase the data you hold about me" in erasure and due in erasure
    completed = await rows.nth(1).inner_text()
    assert "Done" in completed and "31 January 2026" in completed
    assert uk_date(done.json()["due_at"]) not in await page.page.content()
    assert page.outside(live_server.url) == []


async def test_agreeing_and_the_transfer_consent_in_a_browser(live_server: LiveServer, page: Page):
    """No basis and no consent at first: "I agree" makes consent the basis, and the explicit
    transfer consent to MailChimp lets the gate allow the MailChimp audience. Keyboard only,
    no script on the page, and axe finds nothing before or after."""
    crm = await live_server.key("crm")
    async with live_server.client() as http:
        sid = (await http.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
        links = (
            await http.post(
                f"/v1/subjects/{sid}/links", json={"purpose": "content_subscriptions"}, headers=crm
            )
        ).json()
    console_errors = _errors(page)
    await page.page.goto(_on_live(live_server, links["preference_url"]))
    await page.check_accessibility()
    purpose = page.page.locator("#purpose-content_subscriptions")
    await purpose.get_by_role("button", name="I agree").focus()
    await page.page.keyboard.press("Enter")
    await page.page.get_by_role("status").wait_for()
    assert "You agreed on" in await purpose.inner_text()
    await page.check_accessibility()
    transfer = page.page.locator("#transfer-mailchimp")
    assert "the United States" in await transfer.inner_text()
    await page.screenshot("person-preferences-transfer")
    await transfer.get_by_role(
        "button", name="I agree to sending my data to MailChimp in the United States"
    ).focus()
    await page.page.keyboard.press("Enter")
    await page.page.get_by_role("status").wait_for()
    assert "You agreed on" in await transfer.inner_text()
    await page.check_accessibility()
    await page.screenshot("person-preferences-transfer-given")
    async with live_server.client() as http:
        bases = (await http.get(f"/v1/subjects/{sid}/bases", headers=crm)).json()["items"]
        state = (await http.get(f"/v1/subjects/{sid}/consents", headers=crm)).json()["items"]
        decision = (
            await http.post(
                "/v1/decisions",
                json={
                    "subject_id": sid,
                    "purpose": "content_subscriptions",
                    "recipient": "mailchimp",
                },
                headers=crm,
            )
        ).json()
    by_purpose = {b["purpose"]: b for b in bases}
    assert by_purpose["content_subscriptions"]["basis"] == "consent"
    assert by_purpose["content_subscriptions"]["set_by"].startswith("consent_event:")
    assert {(i["purpose"], i.get("recipient"), i["status"]) for i in state} >= {
        ("content_subscriptions", None, "given"),
        ("international_transfer", "mailchimp", "given"),
    }
    assert decision["allowed"] is True, decision
    assert page.outside(live_server.url) == []
    assert console_errors == []
