"""The privacy console over HTTP: signing in (form and `console-link`), CSRF on every form,
an auditor's session refused on every form by the server, revocation of the key ending the
session (link sessions too), and the request page's actions going through the API's own
services (the API reads back what the console did)."""

import uuid

import httpx
import pytest
from sqlalchemy import text

from app.services.access import api_keys
from app.web import session as pages
from tests.access_table import ACCESS
from tests.conftest import new_subject

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HTML = {"Accept": "text/html"}


def _csrf(response: httpx.Response) -> str:
    return response.text.split('name="csrf" value="')[1].split('"')[0]


def _key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def sign_in(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    form = await client.get("/console/login")
    signed = await client.post(
        "/console/login",
        content=f"csrf={_csrf(form)}&next=/console/&api_key={_key(headers)}",
        headers=FORM,
    )
    assert signed.status_code == 303, signed.text
    return signed


async def _request(client, crm, type_="access") -> str:
    sid = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()["id"]
    made = await client.post(
        "/v1/rights-requests", json={"type": type_, "subject_id": sid}, headers=crm
    )
    assert made.status_code == 201, made.text
    return made.json()["id"]


async def test_an_anonymous_browser_is_sent_to_sign_in(client):
    r = await client.get("/console/", headers=HTML)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")


async def test_sign_in_sets_a_strict_httponly_cookie_and_the_queue_opens(client, crm):
    signed = await sign_in(client, crm)
    cookie = signed.headers["set-cookie"]
    assert pages.CONSOLE_SESSION_COOKIE in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    page = await client.get("/console/", headers=HTML)
    assert page.status_code == 200 and 'id="open-counts"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_website_and_sync_keys_do_not_open_the_console(client, make_key):
    for role in ("website", "sync"):
        form = await client.get("/console/login")
        key = _key(await make_key(role))
        r = await client.post(
            "/console/login", content=f"csrf={_csrf(form)}&api_key={key}", headers=FORM
        )
        assert r.status_code == 403


async def test_a_form_without_the_sessions_csrf_token_is_refused(client, crm):
    request_id = await _request(client, crm)
    await sign_in(client, crm)
    for csrf in ("", "forged"):
        r = await client.post(
            f"/console/requests/{request_id}/verify-identity",
            content=f"csrf={csrf}&method=email",
            headers=FORM,
        )
        assert r.status_code == 403
    got = await client.get(f"/v1/rights-requests/{request_id}", headers=crm)
    assert got.json()["status"] == "received"  # nothing done


async def test_an_auditor_sees_no_form_and_every_post_is_refused(client, crm, auditor):
    request_id = await _request(client, crm)
    await sign_in(client, auditor)
    page = await client.get(f"/console/requests/{request_id}", headers=HTML)
    assert page.status_code == 200 and 'id="read-only"' in page.text
    csrf = _csrf(page)  # the sign-out form's: a valid token for this session
    assert "/verify-identity" not in page.text
    posts = [path for method, path in ACCESS if method == "POST" and path.startswith("/console/")]
    for path in posts:
        if path in ("/console/login", "/console/logout"):
            continue
        url = path.replace("{request_id}", request_id).replace("{subject_id}", str(uuid.uuid4()))
        url = url.replace("{key}", "k").replace("{delivery_id}", str(uuid.uuid4()))
        r = await client.post(url, content=f"csrf={csrf}&method=email", headers=FORM)
        assert r.status_code == 403, (path, r.status_code)
    got = await client.get(f"/v1/rights-requests/{request_id}", headers=crm)
    assert got.json()["status"] == "received"


async def test_revoking_the_key_ends_its_console_session(client, db, make_key):
    name = f"officer-{uuid.uuid4().hex[:6]}"
    key = await api_keys.create_key(db, name=name, role="crm")
    await db.commit()
    await sign_in(client, {"Authorization": f"Bearer {key}"})
    assert (await client.get("/console/", headers=HTML)).status_code == 200
    await api_keys.revoke_key(db, name=name)
    await db.commit()
    r = await client.get("/console/", headers=HTML)
    assert r.status_code == 303 and "/console/login" in r.headers["location"]


async def test_logout_ends_the_session(client, crm):
    await sign_in(client, crm)
    page = await client.get("/console/", headers=HTML)
    cookie = client.cookies.get(pages.CONSOLE_SESSION_COOKIE)
    out = await client.post("/console/logout", content=f"csrf={_csrf(page)}", headers=FORM)
    assert out.status_code == 303
    client.cookies.set(pages.CONSOLE_SESSION_COOKIE, cookie, path="/console")
    assert (await client.get("/console/", headers=HTML)).status_code == 303


async def test_a_console_link_acts_as_its_key_and_dies_with_it(client, db, test_settings):
    from app.cli.pages import _console_link_token

    name = f"link-{uuid.uuid4().hex[:6]}"
    await api_keys.create_key(db, name=name, role="crm")
    await db.commit()
    token = await _console_link_token(db, settings=test_settings, name=name, minutes=5)
    opened = await client.get(f"/console/link/{token}")
    assert (
        opened.status_code == 200 and pages.CONSOLE_SESSION_COOKIE in opened.headers["set-cookie"]
    )
    assert (await client.get("/console/", headers=HTML)).status_code == 200
    # An auditor-page link is not a console link, nor the reverse.
    assert (await client.get(f"/auditor/link/{token}")).status_code == 401
    await api_keys.revoke_key(db, name=name)
    await db.commit()
    assert (await client.get("/console/", headers=HTML)).status_code == 303
    client.cookies.clear()
    assert (await client.get(f"/console/link/{token}")).status_code == 401


async def test_console_link_refuses_unknown_and_website_keys(db, test_settings):
    from app.cli import CliError
    from app.cli.pages import _console_link_token

    with pytest.raises(CliError, match="no unrevoked key"):
        await _console_link_token(db, settings=test_settings, name="nobody", minutes=5)
    name = f"web-{uuid.uuid4().hex[:6]}"
    await api_keys.create_key(db, name=name, role="website")
    with pytest.raises(CliError, match="does not open the console"):
        await _console_link_token(db, settings=test_settings, name=name, minutes=5)


async def test_actions_go_through_the_apis_services(client, crm):
    request_id = await _request(client, crm)
    await sign_in(client, crm)
    page = await client.get(f"/console/requests/{request_id}", headers=HTML)
    csrf = _csrf(page)
    base = f"/console/requests/{request_id}"
    refused = await client.post(f"{base}/complete", content=f"csrf={csrf}", headers=FORM)
    assert refused.status_code == 409 and "identity must be verified" in refused.text
    for action, fields in (
        ("verify-identity", "method=document"),
        ("pause", "reason=awaiting_clarification"),
        ("resume", ""),
        ("complete", ""),
    ):
        r = await client.post(f"{base}/{action}", content=f"csrf={csrf}&{fields}", headers=FORM)
        assert r.status_code == 303, (action, r.text[-500:])
    got = (await client.get(f"/v1/rights-requests/{request_id}", headers=crm)).json()
    assert got["status"] == "completed" and got["identity_method"] == "document"
    assert [h["action"] for h in got["history"]][-3:] == ["paused", "resumed", "completed"]
    report = await client.get(f"{base}/export?format=json", headers=HTML)
    assert report.status_code == 200 and "attachment" in report.headers["content-disposition"]


async def test_a_refused_model_check_keeps_nothing(client, crm):
    request_id = await _request(client, crm)
    await sign_in(client, crm)
    csrf = _csrf(await client.get(f"/console/requests/{request_id}", headers=HTML))
    r = await client.post(
        f"/console/requests/{request_id}/reject",
        content=f"csrf={csrf}&reason=no&code=legal_exemption",
        headers=FORM,
    )
    assert r.status_code == 422 and "article" in r.text
    assert (await client.get(f"/v1/rights-requests/{request_id}", headers=crm)).json()[
        "status"
    ] == "received"


async def test_the_open_counts_read_the_partial_index(db):
    plan = (
        await db.execute(
            text(
                "EXPLAIN SELECT status, count(*) FROM rights_requests "
                "WHERE status IN ('received', 'identity_verified') GROUP BY status"
            )
        )
    ).all()
    assert plan  # the index exists (migration 0028); the planner may prefer it at scale
    names = await db.execute(
        text("SELECT indexname FROM pg_indexes WHERE tablename = 'rights_requests'")
    )
    assert "ix_rights_requests_open_due" in {n for (n,) in names}
