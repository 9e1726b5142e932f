"""The privacy console in Debian's chromium, driven with the keyboard against a live server:
sign in, work an access request from received to completed and download the report, an
erasure refused in part showing its articles, a subject's page showing a consent given
through the API, an admin adding a purpose to a recipient (previewed, then saved) and a
decision to it changing, and an auditor who sees no form. axe-core on every page
(tests/browser.py); screenshots in test-artifacts/screenshots."""

import uuid
from pathlib import Path

from tests.conftest import new_subject
from tests.test_consent import give

NARROW = {"width": 390, "height": 844}


async def _arrange(live, type_="access"):
    crm = await live.key("crm")
    async with live.client() as http:
        sid = (await http.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
        given = await http.post("/v1/consent-events", json=give(sid), headers=crm)
        assert given.status_code == 201, given.text
        if type_ == "erasure":
            await http.put(
                f"/v1/subjects/{sid}/bases/contractual_communications",
                json={"basis": "contract", "contract_ref": "C-42"},
                headers=crm,
            )
        made = await http.post(
            "/v1/rights-requests", json={"type": type_, "subject_id": sid}, headers=crm
        )
        assert made.status_code == 201, made.text
    return crm, sid, made.json()["id"]


async def _sign_in(page, live, headers):
    """Keyboard only: type the key, Enter."""
    await page.page.goto(f"{live.url}/console/")
    assert "/console/login" in page.page.url
    await page.check_accessibility()
    await page.page.focus("#api_key")
    await page.page.keyboard.type(headers["Authorization"].removeprefix("Bearer "))
    await page.page.keyboard.press("Enter")
    await page.page.wait_for_selector("#open-counts")
    await page.check_accessibility()


async def _submit(page, form_id):
    """Focus the form's button and press Enter (no mouse)."""
    await page.page.focus(f"#{form_id} button[type=submit]")
    async with page.page.expect_navigation():
        await page.page.keyboard.press("Enter")
    await page.check_accessibility()


async def test_an_access_request_worked_to_the_end(live_server, page):
    crm, _, request_id = await _arrange(live_server)
    await page.page.set_viewport_size(NARROW)
    await _sign_in(page, live_server, crm)
    await page.screenshot("console-requests")
    await page.page.goto(f"{live_server.url}/console/requests/{request_id}")
    await page.check_accessibility()
    await page.screenshot("console-request")
    await page.page.select_option("#verify-method", "document")
    await _submit(page, "form-verify")
    assert "Identity verified" in await page.page.inner_text("#summary")
    await _submit(page, "form-complete")
    await page.screenshot("console-request-completed")
    async with page.page.expect_download() as download:
        await page.page.focus("#download-json")
        await page.page.keyboard.press("Enter")
    saved = await (await download.value).path()
    assert '"held"' in Path(saved).read_text()  # noqa: ASYNC240 (a small local file)
    assert page.outside(live_server.url) == []


async def test_an_erasure_refused_in_part_shows_its_articles(live_server, page):
    crm, _, request_id = await _arrange(live_server, "erasure")
    await _sign_in(page, live_server, crm)
    await page.page.goto(f"{live_server.url}/console/requests/{request_id}")
    await page.check_accessibility()
    await _submit(page, "form-verify")
    await _submit(page, "form-complete")
    assert "17(1)(a)" in await page.page.inner_text("#outcome")
    await page.screenshot("console-erasure-in-part")


async def test_a_subjects_page_shows_a_consent_given_through_the_api(live_server, page):
    crm, sid, _ = await _arrange(live_server)
    await _sign_in(page, live_server, crm)
    await page.page.goto(f"{live_server.url}/console/people/{sid}")
    await page.check_accessibility()
    consents = await page.page.inner_text("#consents")
    assert "content_subscriptions" in consents and "given" in consents
    await page.screenshot("console-subject")
    await page.page.goto(f"{live_server.url}/console/people?q=Ada")
    await page.check_accessibility()
    assert await page.page.locator("#people a").count() >= 1


async def test_an_auditor_reads_and_the_server_refuses_a_form(live_server, page):
    _, sid, request_id = await _arrange(live_server)
    await _sign_in(page, live_server, await live_server.key("auditor"))
    await page.page.goto(f"{live_server.url}/console/requests/{request_id}")
    await page.check_accessibility()
    assert await page.page.locator("#form-verify").count() == 0
    await page.page.goto(f"{live_server.url}/console/people/{sid}")
    await page.check_accessibility()
    assert await page.page.locator("form[id^=form-]").count() == 0
    csrf = await page.page.locator("input[name=csrf]").first.get_attribute("value")
    refused = await page.page.request.post(
        f"{live_server.url}/console/requests/{request_id}/verify-identity",
        form={"csrf": csrf or "", "method": "email"},
    )
    assert refused.status == 403
    await page.page.goto(f"{live_server.url}/console/catalogues")
    await page.check_accessibility()
    await page.page.goto(f"{live_server.url}/console/deliveries")
    await page.check_accessibility()
    await page.screenshot("console-deliveries")


async def _recipient_without_purposes(live, admin):
    """A recipient in the UK that serves no purpose yet, and a person the gate would let it
    have surveys data for, were it listed for surveys (legitimate interests)."""
    key = f"acme_{uuid.uuid4().hex[:8]}"
    crm = await live.key("crm")
    async with live.client() as http:
        made = await http.put(
            f"/v1/recipients/{key}",
            json={"name": "Acme Surveys Ltd", "role": "processor", "country": "GB",
                  "inside_eea_uk": True, "purposes": []},
            headers=admin,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        sid = (await http.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
        based = await http.put(
            f"/v1/subjects/{sid}/bases/surveys",
            json={"basis": "legitimate_interests", "lia_ref": "LIA-9"},
            headers=crm,
        )
        assert based.status_code in (200, 201), based.text
    return key, crm, {"subject_id": sid, "purpose": "surveys", "recipient": key}


async def test_an_admin_adds_a_purpose_to_a_recipient_and_its_decision_changes(live_server, page):
    admin = await live_server.key("admin")
    key, crm, ask = await _recipient_without_purposes(live_server, admin)
    async with live_server.client() as http:
        before = (await http.post("/v1/decisions", json=ask, headers=crm)).json()
    assert before["reasons"] == ["recipient_not_for_purpose"]
    await _sign_in(page, live_server, admin)
    await page.page.goto(f"{live_server.url}/console/catalogues")
    await page.check_accessibility()
    await page.screenshot("console-catalogues")
    await page.page.focus(f"#change-recipient-{key}")
    async with page.page.expect_navigation():
        await page.page.keyboard.press("Enter")
    await page.check_accessibility()
    await page.page.focus("#f-purpose-surveys")
    await page.page.keyboard.press("Space")
    await _submit(page, "form-edit")  # Preview: nothing saved yet
    assert await page.page.inner_text("#effects .to-allowed") == "1"
    await page.screenshot("console-catalogue-preview")
    async with live_server.client() as http:
        unchanged = (await http.post("/v1/decisions", json=ask, headers=crm)).json()
    assert unchanged["allowed"] is False
    await _submit(page, "form-save")
    assert "saved" in await page.page.inner_text("#done")
    async with live_server.client() as http:
        after = (await http.post("/v1/decisions", json=ask, headers=crm)).json()
    assert after["allowed"] is True and after["reasons"] == []
    for kind in ("purpose", "policy", "retention?key=visitor", "controller"):
        await page.page.goto(f"{live_server.url}/console/catalogues/{kind}")
        await page.check_accessibility()
    await page.screenshot("console-catalogue-controller")
    await page.page.set_viewport_size(NARROW)
    await page.page.goto(f"{live_server.url}/console/catalogues/recipient?key={key}")
    await page.check_accessibility()
    await page.screenshot("console-catalogue-recipient-narrow")
