"""Signed links, RFC 8058 one-click unsubscribe and the preference page, over HTTP, with
assertions on the database."""

import base64
import json
import re
import time
import uuid

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.core.link_tokens import (
    ExpiredToken,
    InvalidToken,
    form_token,
    sign_link,
    verify_link,
)
from app.main import create_app
from tests.conftest import new_subject

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
NOTICE = "Tick to receive white papers and blog posts from JI Group."


async def _subject(client, crm, **extra):
    r = await client.post("/v1/subjects", json=new_subject(**extra), headers=crm)
    assert r.status_code == 201, r.text
    return r.json()


async def _links(client, crm, sid, purpose=None):
    body = {"purpose": purpose} if purpose else {}
    r = await client.post(f"/v1/subjects/{sid}/links", json=body, headers=crm)
    assert r.status_code == 200, r.text
    return r.json()


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def _marketing_by_li(client, crm, sid):
    r = await client.put(
        f"/v1/subjects/{sid}/bases/email_campaigns",
        json={"basis": "legitimate_interests", "lia_ref": "LIA-1"},
        headers=crm,
    )
    assert r.status_code in (200, 201), r.text


async def _decide(client, crm, sid, purpose):
    r = await client.post(
        "/v1/decisions", json={"subject_id": sid, "purpose": purpose}, headers=crm
    )
    return r.json()


async def _give(client, crm, sid, purpose="content_subscriptions"):
    await client.put(f"/v1/subjects/{sid}/bases/{purpose}", json={"basis": "consent"}, headers=crm)
    body = {
        "subject_id": sid,
        "purpose": purpose,
        "action": "given",
        "method": "web_form",
        "policy_version": "1",
        "notice_text": NOTICE,
    }
    r = await client.post("/v1/consent-events", json=body, headers=crm)
    assert r.status_code == 201, r.text


async def _count(db, sql, **params):
    return (await db.execute(text(sql), params)).scalar()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no form token on the page"
    return match.group(1)


async def test_links_carry_no_personal_data_and_name_the_headers(client, crm, make_key, db):
    s = await _subject(client, crm, name="Grace Hopper")
    links = await _links(client, crm, s["id"], purpose="email_campaigns")
    base = "http://127.0.0.1:8000"  # CONSENT_PUBLIC_BASE_URL's default, never the Host header
    assert links["unsubscribe_url"].startswith(base + "/u/")
    assert links["preference_url"].startswith(base + "/p/")
    assert links["headers"] == {
        "List-Unsubscribe": f"<{links['unsubscribe_url']}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert links["preference_expires_at"] < links["unsubscribe_expires_at"]
    for url in (links["unsubscribe_url"], links["preference_url"]):
        token = url.rsplit("/", 1)[1]
        payload = base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()
        assert s["email"] not in payload and "Grace" not in payload
        assert json.loads(payload)["s"] == uuid.UUID(s["id"]).hex
    audited = await _count(
        db,
        "SELECT count(*) FROM audit_entries WHERE action = 'link.create' AND entity_id = :s",
        s=s["id"],
    )
    assert audited == 1
    # The website cannot make links; unknown subjects and purposes are refused.
    website = await make_key("website")
    r = await client.post(f"/v1/subjects/{s['id']}/links", json={}, headers=website)
    assert r.status_code == 403
    r = await client.post(f"/v1/subjects/{uuid.uuid4()}/links", json={}, headers=crm)
    assert r.status_code == 404
    r = await client.post(f"/v1/subjects/{s['id']}/links", json={"purpose": "nope"}, headers=crm)
    assert r.status_code == 422
    sync = await make_key("sync")
    r = await client.post(f"/v1/subjects/{s['id']}/links", headers=sync)
    assert r.status_code == 200, r.text


async def test_one_click_post_opts_out_once_and_flips_the_gate(client, crm, db):
    s = await _subject(client, crm)
    await _marketing_by_li(client, crm, s["id"])
    assert (await _decide(client, crm, s["id"], "email_campaigns"))["allowed"] is True
    unsubscribe = _path((await _links(client, crm, s["id"], "email_campaigns"))["unsubscribe_url"])
    # Exactly what a mailbox provider sends: form-encoded, no cookies, no API key.
    r = await client.post(
        unsubscribe,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert "set-cookie" not in r.headers and "location" not in r.headers
    decision = await _decide(client, crm, s["id"], "email_campaigns")
    assert decision["allowed"] is False and "marketing_opt_out" in decision["reasons"]
    # Idempotent, multipart too (RFC 8058 says SHOULD be multipart/form-data).
    r = await client.post(unsubscribe, files={"List-Unsubscribe": (None, "One-Click")})
    assert r.status_code == 200
    rows = (
        await db.execute(
            text(
                "SELECT o.channel, o.source FROM marketing_optouts o"
                " JOIN subjects s ON s.email_hash = o.email_hash WHERE s.id = :s"
            ),
            {"s": s["id"]},
        )
    ).all()
    assert [tuple(r) for r in rows] == [("email", "email_link")]
    feed = await _count(
        db, "SELECT count(*) FROM changes WHERE kind = 'optout' AND subject_id = :s", s=s["id"]
    )
    audited = await _count(
        db,
        "SELECT count(*) FROM audit_entries WHERE action = 'optout.create'"
        " AND actor_role = 'subject' AND digest->>'subject_id' = :s",
        s=s["id"],
    )
    assert (feed, audited) == (1, 1)
    check = await client.get("/v1/opt-outs/check", params={"email": s["email"]}, headers=crm)
    assert check.json() == {"opted_out": True, "channels": ["email"]}


async def test_get_and_bad_requests_change_nothing(client, crm, db, test_settings):
    s = await _subject(client, crm)
    unsubscribe = _path((await _links(client, crm, s["id"]))["unsubscribe_url"])
    token = unsubscribe.rsplit("/", 1)[1]
    page = await client.get(unsubscribe)
    assert page.status_code == 200 and page.text.count("<button") == 1
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "noindex" in page.headers["x-robots-tag"]
    assert s["email"] not in page.text
    tampered = unsubscribe[:-3] + ("AAA" if not unsubscribe.endswith("AAA") else "BBB")
    other = await _subject(client, crm)
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["s"] = uuid.UUID(other["id"]).hex  # widened to someone else, old signature kept
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    expired = sign_link(
        test_settings,
        kind="u",
        subject_id=uuid.UUID(s["id"]),
        email_hash="0" * 64,
        purpose=None,
        expires_at=int(time.time()) - 1,
    )
    preference_token_on_u = _path((await _links(client, crm, s["id"]))["preference_url"])
    cases = [
        (tampered, ONE_CLICK, 404),
        (f"/u/{forged_body}.{mac}", ONE_CLICK, 404),
        (f"/u/{expired}", ONE_CLICK, 410),
        ("/u/" + preference_token_on_u.rsplit("/", 1)[1], ONE_CLICK, 404),
        ("/u/not-a-token", ONE_CLICK, 404),
        (unsubscribe, {"List-Unsubscribe": "Yes"}, 400),
        (unsubscribe, {}, 400),
    ]
    for path, body, status in cases:
        r = await client.post(path, data=body)
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "Nothing has been changed" in r.text
    assert await _count(db, "SELECT count(*) FROM marketing_optouts") == 0


async def test_unsubscribe_outlives_erasure_and_email_change(client, crm, db):
    s = await _subject(client, crm)
    links = await _links(client, crm, s["id"])
    new_email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    r = await client.patch(f"/v1/subjects/{s['id']}", json={"email": new_email}, headers=crm)
    assert r.status_code == 200, r.text
    # The old address's holder no longer sees the subject's page...
    page = await client.get(_path(links["preference_url"]))
    assert page.status_code == 410 and new_email not in page.text
    # ...but can still unsubscribe the old address, after erasure too.
    erase = await client.post(
        "/v1/rights-requests", json={"type": "erasure", "subject_id": s["id"]}, headers=crm
    )
    rid = erase.json()["id"]
    await client.post(
        f"/v1/rights-requests/{rid}/verify-identity", json={"method": "email"}, headers=crm
    )
    done = await client.post(f"/v1/rights-requests/{rid}/complete", json={}, headers=crm)
    assert done.status_code == 200, done.text
    r = await client.post(_path(links["unsubscribe_url"]), data=ONE_CLICK)
    assert r.status_code == 200
    check = await client.get("/v1/opt-outs/check", params={"email": s["email"]}, headers=crm)
    assert check.json()["opted_out"] is True


async def test_preference_page_forms_use_the_ordinary_services(client, crm, db, test_settings):
    s = await _subject(client, crm, name="Ada Lovelace")
    await _give(client, crm, s["id"])
    p = _path((await _links(client, crm, s["id"], "content_subscriptions"))["preference_url"])
    page = await client.get(p)
    assert page.status_code == 200
    assert "Ada Lovelace" in page.text and s["email"] in page.text
    assert "White papers, blogs and specific enquiries" in page.text and "(§9)" not in page.text
    csrf = _csrf(page.text)
    # No form token (or one for another link): refused, nothing changed.
    for bad in ("", form_token(test_settings, "another-token")):
        r = await client.post(
            p + "/withdraw", data={"csrf": bad, "purpose": "content_subscriptions"}
        )
        assert r.status_code == 403
    r = await client.post(
        p + "/withdraw",
        data={"csrf": csrf, "purpose": "content_subscriptions"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403
    state = await client.get(f"/v1/subjects/{s['id']}/consents", headers=crm)
    assert state.json()["items"][0]["status"] == "given"
    # Withdraw.
    r = await client.post(p + "/withdraw", data={"csrf": csrf, "purpose": "content_subscriptions"})
    assert r.status_code == 303 and r.headers["location"] == p + "?done=withdrawn"
    decision = await _decide(client, crm, s["id"], "content_subscriptions")
    assert decision["reasons"] == ["consent_withdrawn"]
    event = (
        await db.execute(
            text(
                "SELECT method, recorded_by, page_url FROM consent_events"
                " WHERE subject_id = :s AND action = 'withdrawn'"
            ),
            {"s": s["id"]},
        )
    ).one()
    assert event.method == "web_form" and event.recorded_by == "person (signed link)"
    assert event.page_url == "http://127.0.0.1:8000/p/"  # never the token
    # Give it back with the wording shown and the current policy version.
    page = await client.get(p + "?done=withdrawn")
    assert "your consent is withdrawn" in page.text
    sha = re.search(
        r'name="purpose" value="content_subscriptions">\s*<input type="hidden" '
        r'name="notice_sha256" value="([0-9a-f]{64})"',
        page.text,
    )
    assert sha, page.text
    stale = {"csrf": csrf, "purpose": "content_subscriptions", "policy_version": "1"}
    r = await client.post(p + "/give", data={**stale, "notice_sha256": "0" * 64})
    assert r.status_code == 409
    r = await client.post(p + "/give", data={**stale, "notice_sha256": sha.group(1)})
    assert r.status_code == 303
    assert (await _decide(client, crm, s["id"], "content_subscriptions"))["allowed"] is True
    notice = (
        await db.execute(
            text(
                "SELECT e.policy_version, n.text FROM consent_events e JOIN consent_notices n"
                " ON n.sha256 = e.notice_sha256 WHERE e.subject_id = :s AND e.action = 'given'"
                " AND e.recorded_by = 'person (signed link)'"
            ),
            {"s": s["id"]},
        )
    ).one()
    assert notice.policy_version == "1" and notice.text in page.text
    kinds = (
        await db.execute(
            text("SELECT kind FROM changes WHERE subject_id = :s ORDER BY seq"), {"s": s["id"]}
        )
    ).scalars()
    assert list(kinds)[-2:] == ["consent.withdrawn", "consent.given"]
    # Opt out of all marketing.
    r = await client.post(p + "/opt-out", data={"csrf": csrf})
    assert r.status_code == 303
    check = await client.get("/v1/opt-outs/check", params={"email": s["email"]}, headers=crm)
    assert check.json()["channels"] == ["all"]


async def test_rights_request_from_the_page_is_not_verified_by_the_link(client, crm, db):
    s = await _subject(client, crm)
    p = _path((await _links(client, crm, s["id"]))["preference_url"])
    csrf = _csrf((await client.get(p)).text)
    r = await client.post(p + "/request", data={"csrf": csrf, "type": "telepathy"})
    assert r.status_code == 422
    r = await client.post(p + "/request", data={"csrf": csrf, "type": "access", "details": "All"})
    assert r.status_code == 303
    listed = await client.get("/v1/rights-requests", params={"type": "access"}, headers=crm)
    mine = [i for i in listed.json()["items"] if i["subject_id"] == s["id"]]
    assert len(mine) == 1
    detail = (await client.get(f"/v1/rights-requests/{mine[0]['id']}", headers=crm)).json()
    # A link proves only that someone holds an e-mail we sent: the request waits for the
    # identity to be verified, as any other request does.
    assert detail["status"] == "received" and detail["identity_method"] is None
    assert [h["action"] for h in detail["history"]] == ["received"]
    audited = await _count(
        db,
        "SELECT count(*) FROM audit_entries WHERE entity_id = :r AND actor_role = 'subject'",
        r=mine[0]["id"],
    )
    assert audited == 1
    # A client cannot claim `link` itself.
    other = await client.post(
        "/v1/rights-requests", json={"type": "access", "subject_id": s["id"]}, headers=crm
    )
    r = await client.post(
        f"/v1/rights-requests/{other.json()['id']}/verify-identity",
        json={"method": "link"},
        headers=crm,
    )
    assert r.status_code == 422
    page = await client.get(p)
    assert "Send me a copy of the data you hold about me" in page.text


async def test_requests_are_rate_limited_per_token(engine, conn, test_settings, client, crm, db):
    s = await _subject(client, crm)
    p = _path((await _links(client, crm, s["id"]))["preference_url"])
    settings = test_settings.model_copy(update={"link_rate_limit": 3})
    app = create_app(settings, engine=engine, session_bind=conn)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as limited:
        statuses = [(await limited.get(p)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        other = _path((await _links(client, crm, s["id"], "surveys"))["preference_url"])
        assert (await limited.get(other)).status_code == 200  # per token, not global


def test_keys_rotate_and_tokens_cannot_be_widened(test_settings):
    def keys(value):
        return test_settings.model_copy(update={"link_keys": SecretStr(value)})

    old, new_only = keys("old:" + "o" * 32), keys("new:" + "n" * 32)
    both = keys("new:" + "n" * 32 + ",old:" + "o" * 32)
    sid = uuid.uuid4()
    claims = {"subject_id": sid, "email_hash": "ab" * 32, "purpose": None}
    token = sign_link(old, kind="u", expires_at=int(time.time()) + 60, **claims)
    assert verify_link(both, token, kind="u").subject_id == sid
    assert (
        verify_link(both, sign_link(both, kind="u", expires_at=2**40, **claims), kind="u").kid
        == "new"
    )
    with pytest.raises(InvalidToken):
        verify_link(new_only, token, kind="u")
    with pytest.raises(InvalidToken):
        verify_link(old, token, kind="p")
    with pytest.raises(ExpiredToken):
        verify_link(old, token, kind="u", now=time.time() + 120)
    with pytest.raises(ValueError, match="CONSENT_LINK_KEYS"):
        verify_link(keys("short:abc"), token, kind="u")


async def test_links_need_an_https_base_url_outside_development(
    engine, conn, test_settings, client, crm
):
    s = await _subject(client, crm)
    for base, status in (("http://consent.example.com", 503), ("https://consent.example.com", 200)):
        settings = test_settings.model_copy(update={"env": "production", "public_base_url": base})
        app = create_app(settings, engine=engine, session_bind=conn)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://evil.example"
        ) as prod:
            r = await prod.post(f"/v1/subjects/{s['id']}/links", json={}, headers=crm)
        assert r.status_code == status, r.text
    assert r.json()["unsubscribe_url"].startswith("https://consent.example.com/u/")


async def test_the_page_escapes_what_it_shows(client, crm):
    s = await _subject(client, crm, name="<script>alert(1)</script>")
    page = await client.get(_path((await _links(client, crm, s["id"]))["preference_url"]))
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;" in page.text
    assert "<script" not in page.text  # no script of any kind on the page
