"""`/docs` authorises with an API key, in a real browser (Debian's chromium through
Playwright) against a live server: the document's HTTP bearer scheme gives Swagger UI its
Authorize dialog, and a request tried from the page then carries the key. Offline: nothing
the page loads comes from anywhere but the service."""

OPERATION = "#operations-catalogues-list_purposes"  # GET /v1/purposes: every role reads it


async def _try_it(page) -> str:
    """Execute GET /v1/purposes from its panel; the status the response panel shows."""
    block = page.locator(OPERATION)
    execute = block.locator("button.execute")
    if not await execute.count():
        await block.locator("button.try-out__btn").click()
    await execute.click()
    status = block.locator(".live-responses-table .response .response-col_status").first
    await status.wait_for(timeout=30000)
    return (await status.inner_text()).strip()


async def test_authorize_then_try_a_keyed_get(live_server, page):
    auditor = await live_server.key("auditor")
    key = auditor["Authorization"].removeprefix("Bearer ")
    sent: list[str | None] = []
    page.page.on(
        "request",
        lambda r: sent.append(r.headers.get("authorization")) if "/v1/purposes" in r.url else None,
    )
    await page.page.goto(f"{live_server.url}/docs")
    await page.page.wait_for_selector(OPERATION, timeout=30000)
    await page.check_accessibility()
    await page.page.locator(f"{OPERATION} .opblock-summary").first.click()
    # Not authorised yet: the guard's 401.
    assert (await _try_it(page.page)).startswith("401")
    await page.page.locator(f"{OPERATION} button.btn-clear").click()  # the next shows its own

    await page.page.locator(".auth-wrapper button.authorize").click()
    dialog = page.page.locator(".modal-ux")
    await dialog.wait_for()
    assert "bearerAuth" in await dialog.inner_text()
    await dialog.locator("input[aria-label='auth-bearer-value']").fill(key)
    await dialog.locator(".auth-btn-wrapper button.authorize").click()
    await dialog.locator("button.btn-done").click()
    status = await _try_it(page.page)
    await page.screenshot("docs-authorized")
    assert status.startswith("200")
    assert sent == [None, f"Bearer {key}"]
    assert page.outside(live_server.url) == []


async def test_public_operations_show_no_lock(live_server, page):
    await page.page.goto(f"{live_server.url}/docs")
    await page.page.wait_for_selector(OPERATION, timeout=30000)
    await page.check_accessibility()
    locked = page.page.locator(f"{OPERATION} .authorization__btn")
    assert await locked.count() == 1  # a keyed operation offers its lock
    for public in (
        "#operations-accountability-list_signing_keys",
        "#operations-operations-healthz",
    ):
        assert await page.page.locator(f"{public} .authorization__btn").count() == 0, public
