"""The auditor pages' sessions, server-side (security review, finding 8): logout ends a
session for good, a session opened from a report link can be revoked from the command line
(and its link with it), wrong keys on the login form are throttled with the API's failed
authentications, the cookies are Secure when the service is published over https, and the
table never holds a token."""

import hashlib
import hmac
import json
import time

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from app import cli
from app.main import create_app
from app.services.access import page_sessions
from app.web import session as pages

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HTML = {"Accept": "text/html"}


def _csrf(response: httpx.Response) -> str:
    return response.text.split('name="csrf" value="')[1].split('"')[0]


async def _sign_in(client: httpx.AsyncClient, key: str, form: httpx.Response | None = None):
    form = form or await client.get("/auditor/login")
    return await client.post(
        "/auditor/login",
        content=f"csrf={_csrf(form)}&next=/v1/reports/overview&api_key={key}",
        headers=FORM,
    )


def _key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def _row(db, token: str):
    return (
        await db.execute(
            text("SELECT * FROM page_sessions WHERE token_hash = :h"),
            {"h": hashlib.sha256(token.encode()).hexdigest()},
        )
    ).one()


async def _opens(client: httpx.AsyncClient, cookie: str) -> int:
    """The overview's status for a browser sending this session cookie (303: sign in)."""
    client.cookies.clear()
    client.cookies.set(pages.SESSION_COOKIE, cookie)
    return (await client.get("/v1/reports/overview", headers=HTML)).status_code


async def test_logout_ends_the_session_and_its_cookie_cannot_be_replayed(app, client, auditor, db):
    signed_in = await _sign_in(client, _key(auditor))
    assert signed_in.status_code == 303
    cookie = signed_in.cookies[pages.SESSION_COOKIE]
    row = await _row(db, cookie)
    assert row.opened == "login" and row.role == "auditor" and row.api_key_id is not None
    assert row.ended_at is None
    page = await client.get("/v1/reports/overview")
    assert page.status_code == 200
    out = await client.post("/auditor/logout", content=f"csrf={_csrf(page)}", headers=FORM)
    assert out.status_code == 303 and out.headers["location"] == "/auditor/login"

    row = await _row(db, cookie)
    assert row.ended_at is not None and row.ended_by == "logout"
    # The cookie's signature is still good and it has not expired: the record refuses it.
    assert pages.read_session(app.state.settings, cookie) is not None
    assert await _opens(client, cookie) == 303
    as_json = await client.get("/v1/reports/overview", headers={"Accept": "application/json"})
    assert as_json.status_code == 401


async def test_a_report_link_session_revoked_from_the_command_line(client, db, test_settings):
    token = pages.issue_link_token(test_settings, role="auditor", minutes=5)
    opened = await client.get(f"/auditor/link/{token}")
    assert opened.status_code == 200
    cookie = opened.cookies[pages.SESSION_COOKIE]
    assert (await client.get("/v1/reports/overview")).status_code == 200
    row = await _row(db, cookie)
    assert row.opened == "link" and row.api_key_id is None
    assert row.link_hash == hashlib.sha256(token.encode()).hexdigest()
    # A second browser opened the same link.
    client.cookies.clear()
    other = (await client.get(f"/auditor/link/{token}")).cookies[pages.SESSION_COOKIE]
    listed = {r["id"] for r in await page_sessions.list_sessions(db)}
    assert row.id in listed

    # `consent-api page-sessions revoke <id>`, in this test's transaction.
    revoked = await cli.pages._page_sessions_revoke(
        db, settings=test_settings, session_id=str(row.id), every=False, link=None
    )
    await db.commit()
    assert row.id in revoked and len(revoked) == 2  # the link's other session too
    assert await _opens(client, cookie) == 303
    assert await _opens(client, other) == 303
    client.cookies.clear()
    again = await client.get(f"/auditor/link/{token}")
    assert again.status_code == 401 and "revoked" in again.text
    assert pages.SESSION_COOKIE not in again.cookies
    row = await _row(db, cookie)
    assert row.ended_by == "revoke" and row.ended_at is not None
    assert row.id not in {r["id"] for r in await page_sessions.list_sessions(db)}
    audited = (
        await db.execute(
            text("SELECT count(*) FROM audit_entries WHERE action = 'page_session.revoke'")
        )
    ).scalar()
    assert audited == 2
    with pytest.raises(cli.CliError):  # nothing left to revoke
        await cli.pages._page_sessions_revoke(
            db, settings=test_settings, session_id=str(row.id), every=False, link=None
        )


async def test_revoke_by_link_and_revoke_all(client, db, auditor, test_settings):
    base = "https://consent.example/auditor/link/"
    # A link nobody has opened yet: refused from its first use.
    unopened = pages.issue_link_token(test_settings, role="auditor", minutes=5)
    assert await cli.pages._page_sessions_revoke(
        db, settings=test_settings, session_id=None, every=False, link=base + unopened
    )
    await db.commit()
    refused = await client.get(f"/auditor/link/{unopened}")
    assert refused.status_code == 401 and pages.SESSION_COOKIE not in refused.cookies
    with pytest.raises(cli.CliError, match="revoked already"):
        await cli.pages._page_sessions_revoke(
            db, settings=test_settings, session_id=None, every=False, link=base + unopened
        )
    with pytest.raises(cli.CliError, match="not a valid report link"):
        await cli.pages._page_sessions_revoke(
            db, settings=test_settings, session_id=None, every=False, link=base + "forged.x"
        )

    # --all: a login session, a live link session, and a link whose session logged out.
    signed_in = (await _sign_in(client, _key(auditor))).cookies[pages.SESSION_COOKIE]
    client.cookies.clear()
    live_link = pages.issue_link_token(test_settings, role="admin", minutes=5)
    from_link = (await client.get(f"/auditor/link/{live_link}")).cookies[pages.SESSION_COOKIE]
    client.cookies.clear()
    left_link = pages.issue_link_token(test_settings, role="auditor", minutes=5)
    await client.get(f"/auditor/link/{left_link}")
    page = await client.get("/v1/reports/overview")
    await client.post("/auditor/logout", content=f"csrf={_csrf(page)}", headers=FORM)
    client.cookies.clear()
    assert (await client.get(f"/auditor/link/{left_link}")).status_code == 200  # after logout
    for cookie in (signed_in, from_link):
        assert await _opens(client, cookie) == 200

    assert await cli.pages._page_sessions_revoke(
        db, settings=test_settings, session_id=None, every=True, link=None
    )
    await db.commit()
    assert await page_sessions.list_sessions(db) == []
    for cookie in (signed_in, from_link):
        assert await _opens(client, cookie) == 303
    client.cookies.clear()
    for link in (live_link, left_link):
        assert (await client.get(f"/auditor/link/{link}")).status_code == 401
    # The key itself still signs in: revoking sessions does not revoke keys.
    assert (await _sign_in(client, _key(auditor))).status_code == 303


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("consent_api_auth_failures_total", {"reason": reason}) or 0.0


async def test_failed_logins_are_throttled_with_the_other_auth_failures(app, client, auditor):
    """`auth_failures_allowed` is 20: twenty wrong keys are each a 401; the 21st wrong key is
    a 429 with Retry-After, while the right key from the same address still signs in (as on
    the API: only failures are refused)."""
    before = _failures("page_login")
    form = await client.get("/auditor/login")
    for i in range(20):
        form = await _sign_in(client, f"cak_wrong{i}", form)
        assert form.status_code == 401, i
    assert _failures("page_login") - before == 20
    throttled = await _sign_in(client, "cak_wrong20", form)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert pages.SESSION_COOKIE not in throttled.cookies
    assert "Too many failed sign-ins" in throttled.text
    # Counted with the API's failures: the one limiter of the app, per address.
    assert app.state.auth_limiter.retry_after("127.0.0.1") >= 1  # httpx's client address
    right = await _sign_in(client, _key(auditor), throttled)
    assert right.status_code == 303 and pages.SESSION_COOKIE in right.cookies


async def test_the_apis_failures_count_against_the_login_form(client, auditor):
    for i in range(20):
        bad = await client.get("/v1/purposes", headers={"Authorization": f"Bearer cak_bad{i}"})
        assert bad.status_code in (401, 429)
    form = await client.get("/auditor/login")
    assert (await _sign_in(client, "cak_wrong", form)).status_code == 429
    assert (await _sign_in(client, _key(auditor))).status_code == 303


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


async def test_cookies_are_secure_when_the_public_base_url_is_https(
    engine, conn, test_settings, auditor
):
    settings = test_settings.model_copy(update={"public_base_url": "https://consent.example"})
    app = create_app(settings, engine=engine, session_bind=conn)
    # Plain http, as the service sees requests from a TLS proxy it does not trust.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        form = await http.get("/auditor/login")
        assert "Secure" in _set_cookies(form)[pages.CSRF_COOKIE]
        # A cookie jar keeps Secure cookies off plain http: the browser behind the proxy
        # spoke https. Send the form's cookie as it would.
        signed_in = await http.post(
            "/auditor/login",
            content=f"csrf={_csrf(form)}&next=/v1/reports/overview&api_key={_key(auditor)}",
            headers={**FORM, "Cookie": f"{pages.CSRF_COOKIE}={form.cookies[pages.CSRF_COOKIE]}"},
        )
        assert signed_in.status_code == 303
        cookie = _set_cookies(signed_in)[pages.SESSION_COOKIE]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        link = pages.issue_link_token(settings, role="auditor", minutes=5)
        opened = await http.get(f"/auditor/link/{link}")
        assert "Secure" in _set_cookies(opened)[pages.SESSION_COOKIE]


async def test_over_http_without_https_public_url_the_cookie_is_not_secure(client, test_settings):
    assert not test_settings.public_base_url.startswith("https://")
    link = pages.issue_link_token(test_settings, role="auditor", minutes=5)
    opened = await client.get(f"/auditor/link/{link}")
    assert "Secure" not in _set_cookies(opened)[pages.SESSION_COOKIE]


async def test_no_token_is_stored_in_clear(client, db, auditor, test_settings):
    cookies = [(await _sign_in(client, _key(auditor))).cookies[pages.SESSION_COOKIE]]
    client.cookies.clear()
    link = pages.issue_link_token(test_settings, role="admin", minutes=5)
    cookies.append((await client.get(f"/auditor/link/{link}")).cookies[pages.SESSION_COOKIE])
    rows = (await db.execute(text("SELECT to_jsonb(s)::text AS r FROM page_sessions s"))).all()
    assert len(rows) == 2
    stored = " ".join(r.r for r in rows)
    for secret in (*cookies, link, _key(auditor)):
        assert secret not in stored
        # nor any part of one long enough to matter (the signed body, the MAC)
        for part in secret.split("."):
            assert len(part) < 12 or part not in stored
    for cookie in cookies:  # each found by its SHA-256
        assert (await _row(db, cookie)).token_hash == hashlib.sha256(cookie.encode()).hexdigest()


async def test_idle_expired_and_retired_key_sessions_are_refused(client, db, test_settings):
    link = pages.issue_link_token(test_settings, role="auditor", minutes=5)
    cookie = (await client.get(f"/auditor/link/{link}")).cookies[pages.SESSION_COOKIE]
    assert await _opens(client, cookie) == 200
    idle = f"now() - interval '{page_sessions.IDLE_MINUTES + 1} minutes'"
    await db.execute(
        text(f"UPDATE page_sessions SET last_seen_at = {idle} WHERE link_hash IS NOT NULL")
    )
    await db.commit()
    assert await _opens(client, cookie) == 303
    await db.execute(
        text(
            "UPDATE page_sessions SET last_seen_at = now(), expires_at = now() - interval '1 s'"
            " WHERE link_hash IS NOT NULL"
        )
    )
    await db.commit()
    assert await _opens(client, cookie) == 303
    # Signed with the retired derivation, HMAC(secret, label): no longer verifies.
    secret = test_settings.secret_key.get_secret_value().encode()
    old_key = hmac.new(secret, b"consent-api auditor pages v1", hashlib.sha256).digest()
    payload = {"kind": "link", "role": "auditor", "name": "x", "exp": int(time.time()) + 60}
    body = pages._b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    old = f"{body}.{pages._b64(hmac.new(old_key, body.encode(), hashlib.sha256).digest())}"
    client.cookies.clear()
    assert (await client.get(f"/auditor/link/{old}")).status_code == 401
    assert (
        await client.get(f"/auditor/link/{pages.sign(test_settings, payload)}")
    ).status_code == 200
