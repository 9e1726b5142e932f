"""The auditor's pages over HTTP: the record of processing activities as JSON and HTML,
the overview's numbers, and the ways in (login form with CSRF, signed link, cookies that
are HttpOnly and SameSite=Strict, revocation, roles). The browser tests are in
test_pages_browser.py."""

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from app.web import session as pages
from tests.conftest import new_subject
from tests.test_consent import give


async def test_ropa_json_lists_the_catalogues_and_settings(client, auditor, crm, test_settings):
    r = await client.get("/v1/reports/processing-activities", headers=auditor)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    ropa = r.json()
    purposes = (await client.get("/v1/purposes", headers=auditor)).json()["items"]
    recipients = (await client.get("/v1/recipients", headers=auditor)).json()["items"]
    assert [p["key"] for p in ropa["purposes"]] == [p["key"] for p in purposes]
    by_key = {p["key"]: p for p in ropa["purposes"]}
    assert by_key["email_campaigns"]["direct_marketing"] is True
    assert by_key["email_campaigns"]["allowed_bases"] == ["consent", "legitimate_interests"]
    assert by_key["partner_referral"]["recipients"] == ["bpmonline", "maximizer"]
    assert {r["key"] for r in ropa["recipients"]} == {r["key"] for r in recipients}
    bpm = next(r for r in ropa["recipients"] if r["key"] == "bpmonline")
    assert bpm["country"] == "US" and bpm["transfer_safeguard"] == "explicit_consent"
    assert ropa["controller"]["name"] == test_settings.controller_name
    assert ropa["security_measures"] == test_settings.security_measures
    assert {r["category"] for r in ropa["retention_rules"]} >= {"customer_contact", "prospect"}
    assert {s["key"] for s in ropa["sources"]} >= {"enquiry", "public_source"}
    assert [d["field"] for d in ropa["categories_of_data"]][:2] == ["name", "email"]
    assert (await client.get("/v1/reports/processing-activities", headers=crm)).status_code == 403
    anonymous = await client.get("/v1/reports/processing-activities")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")


async def test_ropa_html_with_a_strict_policy(client, auditor):
    r = await client.get(
        "/v1/reports/processing-activities", headers={**auditor, "Accept": "text/html"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "<script" not in r.text and 'data-recipient="surveymonkey"' in r.text


async def _login(client, key_headers):
    form = await client.get("/auditor/login")
    csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
    key = key_headers["Authorization"].removeprefix("Bearer ")
    return await client.post(
        "/auditor/login",
        content=f"csrf={csrf}&next=/v1/reports/overview&api_key={key}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def test_login_form_sets_a_strict_httponly_cookie(client, auditor, crm):
    page = await client.get("/v1/reports/overview", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/auditor/login")
    refused = await _login(client, crm)
    assert refused.status_code == 403 and pages.SESSION_COOKIE not in refused.cookies
    ok = await _login(client, auditor)
    assert ok.status_code == 303 and ok.headers["location"] == "/v1/reports/overview"
    cookie = next(
        h for h in ok.headers.get_list("set-cookie") if h.startswith(pages.SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = await client.get("/v1/reports/overview")
    assert page.status_code == 200 and 'id="open-requests"' in page.text


async def test_login_refuses_a_forged_form(client, auditor):
    await client.get("/auditor/login")  # the real form's cookie
    key = auditor["Authorization"].removeprefix("Bearer ")
    r = await client.post(
        "/auditor/login",
        content=f"csrf=guessed&api_key={key}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 403 and pages.SESSION_COOKIE not in r.cookies


async def test_revoking_the_key_ends_the_session(client, db, make_key):
    headers = await make_key("auditor")
    assert (await _login(client, headers)).status_code == 303
    assert (await client.get("/v1/reports/overview")).status_code == 200
    await db.execute(text("UPDATE api_keys SET revoked_at = now() WHERE revoked_at IS NULL"))
    await db.commit()
    r = await client.get("/v1/reports/overview", headers={"Accept": "text/html"})
    assert r.status_code == 303


async def test_signed_links(client, test_settings):
    token = pages.issue_link_token(test_settings, role="auditor", minutes=5)
    r = await client.get(f"/auditor/link/{token}")
    assert r.status_code == 200 and pages.SESSION_COOKIE in r.cookies
    assert (await client.get("/v1/reports/overview")).status_code == 200
    client.cookies.clear()
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert (await client.get(f"/auditor/link/{tampered}")).status_code == 401
    expired = pages.sign(
        test_settings, {"kind": "link", "role": "auditor", "name": "x", "exp": int(time.time()) - 1}
    )
    assert (await client.get(f"/auditor/link/{expired}")).status_code == 401
    # A session token is not a link, nor a link a session.
    session = pages.issue_session(test_settings, role="auditor", name="x", key_id=None)
    assert (await client.get(f"/auditor/link/{session.token}")).status_code == 401
    client.cookies.set(pages.SESSION_COOKIE, token)
    r = await client.get("/v1/reports/overview", headers={"Accept": "text/html"})
    assert r.status_code == 303


async def test_logout_needs_the_session_csrf(client, test_settings):
    token = pages.issue_link_token(test_settings, role="admin", minutes=5)
    await client.get(f"/auditor/link/{token}")
    page = await client.get("/v1/reports/overview")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post("/auditor/logout", content="csrf=x", headers=form)).status_code == 403
    out = await client.post("/auditor/logout", content=f"csrf={csrf}", headers=form)
    assert out.status_code == 303
    assert (
        await client.get("/v1/reports/overview", headers={"Accept": "text/html"})
    ).status_code == 303


async def test_overview_numbers_match_the_api(client, crm, auditor, db):
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    assert (await client.post("/v1/consent-events", json=give(sid), headers=crm)).status_code == 201
    withdraw = {
        "subject_id": sid,
        "purpose": "content_subscriptions",
        "action": "withdrawn",
        "method": "email",
    }
    assert (await client.post("/v1/consent-events", json=withdraw, headers=crm)).status_code == 201
    for purpose in ("content_subscriptions", "surveys"):
        await client.post(
            "/v1/decisions", json={"subject_id": sid, "purpose": purpose}, headers=crm
        )
    old = (datetime.now(UTC) - timedelta(days=70)).isoformat()
    late = await client.post(
        "/v1/rights-requests",
        json={"type": "access", "subject_id": sid, "received_at": old},
        headers=crm,
    )
    assert late.status_code == 201, late.text
    await client.post(
        "/v1/rights-requests", json={"type": "erasure", "subject_id": sid}, headers=crm
    )
    # Paused in time, then its due date passed while the clock stood still: not overdue,
    # here as in the API.
    paused = await client.post(
        "/v1/rights-requests", json={"type": "rectification", "subject_id": sid}, headers=crm
    )
    r = await client.post(
        f"/v1/rights-requests/{paused.json()['id']}/pause",
        json={"reason": "awaiting_identity"},
        headers=crm,
    )
    assert r.status_code == 200, r.text
    await db.execute(
        text("UPDATE rights_requests SET due_at = current_date - 5 WHERE id = :i"),
        {"i": paused.json()["id"]},
    )
    data = (
        await client.get("/v1/reports/overview", headers={**auditor, "Accept": "application/json"})
    ).json()
    shown = {r["id"]: r for r in data["rights_requests"]["items"]}
    assert shown[paused.json()["id"]]["paused"] is True
    assert shown[paused.json()["id"]]["overdue"] is False
    assert shown[late.json()["id"]]["overdue"] is True
    open_api = [
        r
        for status in ("received", "identity_verified")
        for r in (await client.get(f"/v1/rights-requests?status={status}", headers=auditor)).json()[
            "items"
        ]
    ]
    assert data["rights_requests"]["open"] == len(open_api)
    overdue_api = (await client.get("/v1/rights-requests?overdue=true", headers=auditor)).json()[
        "items"
    ]
    assert {r["id"] for r in data["rights_requests"]["items"] if r["overdue"]} == {
        r["id"] for r in overdue_api
    }
    assert late.json()["id"] in {r["id"] for r in overdue_api}
    decisions = (await client.get("/v1/decisions?limit=1000", headers=auditor)).json()["items"]
    assert data["decisions_30_days"]["allowed"] == sum(d["allowed"] for d in decisions)
    assert data["decisions_30_days"]["denied"] == sum(not d["allowed"] for d in decisions)
    month = datetime.now(UTC).strftime("%Y-%m")
    cell = data["consent"]["by_purpose"]["content_subscriptions"][month]
    assert cell == {"given": 1, "withdrawn": 1}
    verify = (await client.get("/v1/audit/verify", headers=auditor)).json()
    assert data["audit_chain"]["verify"]["ok"] and verify["ok"]
    assert data["audit_chain"]["last_sealed_position"] == verify["checked"]
    html = (
        await client.get("/v1/reports/overview", headers={**auditor, "Accept": "text/html"})
    ).text
    assert f'class="overdue" data-request-id="{late.json()["id"]}"' in html
    assert f'class="" data-request-id="{paused.json()["id"]}"' in html
    assert "<svg" in html and "<script" not in html


async def test_the_overview_walks_the_chain_one_at_a_time_with_verify(client, auditor):
    """Each overview walks the whole audit chain: while a walk runs in this worker, another
    overview gets a 503 with Retry-After like GET /v1/audit/verify, instead of queueing."""
    from app.services.audit import chain as audit_chain

    async with audit_chain._walking:
        busy = await client.get(
            "/v1/reports/overview", headers={**auditor, "Accept": "application/json"}
        )
        verify = await client.get("/v1/audit/verify", headers=auditor)
    assert busy.status_code == 503 and busy.headers["retry-after"], busy.text
    assert verify.status_code == 503
    free = await client.get(
        "/v1/reports/overview", headers={**auditor, "Accept": "application/json"}
    )
    assert free.status_code == 200 and free.json()["audit_chain"]["verify"]["ok"] is True
