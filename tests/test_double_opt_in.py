"""Double opt-in by e-mail (DOMAIN.md "Consent") and rights requests from the preference page
confirmed by e-mail, over HTTP against real PostgreSQL and a real local SMTP server
(aiosmtpd on 127.0.0.1): the 202 and the pending row, the gate before and after, the message
received, the /c/ pages and the stored evidence, expiry, repeats, an SMTP outage, and links
that are tampered with or expired."""

import re
import uuid
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.background import send_due
from app.core.config import use_settings
from app.core.db import create_sessionmaker
from app.main import create_app
from app.models.base import utcnow
from app.services.consent.double_opt_in import expire_due
from tests.conftest import new_subject
from tests.smtp_server import SmtpServer, free_port

NOTICE = "Tick to receive white papers and blog posts from JI Group."
PURPOSE = "content_subscriptions"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
LINK = re.compile(r"https?://\S+?(/c/[A-Za-z0-9_.-]+)")
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) confirm-test"


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


def _settings(test_settings, url):
    settings = test_settings.model_copy(update={"smtp_url": SecretStr(url)})
    use_settings(settings)
    return settings


@pytest.fixture
def mail_settings(test_settings, smtp):
    return _settings(test_settings, smtp.url)


@pytest.fixture
async def mail_client(engine, conn, mail_settings):
    app = create_app(mail_settings, engine=engine, session_bind=conn)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def _send(conn, settings, **kw):
    return await send_due(create_sessionmaker(conn, join_transaction_mode="create_savepoint"),
                          settings, **kw)  # fmt: skip


def _body(**extra):
    return {
        "purpose": PURPOSE,
        "action": "given",
        "method": "web_form",
        "policy_version": "1",
        "notice_text": NOTICE,
        "evidence": {"form_id": "newsletter", "page_url": "https://example.com/signup"},
        "confirm_by_email": True,
        **extra,
    }


async def _subject_with_consent_basis(client, crm):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    r = await client.put(f"/v1/subjects/{s['id']}/bases/{PURPOSE}", json={"basis": "consent"},
                         headers=crm)  # fmt: skip
    assert r.status_code == 200, r.text
    return s


async def _decide(client, crm, sid):
    r = await client.post("/v1/decisions", json={"subject_id": sid, "purpose": PURPOSE},
                          headers=crm)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


async def _row(db, sql, **params):
    return (await db.execute(text(sql), params)).first()


def _link(message) -> str:
    plain = message.get_body(("plain",)).get_content()
    found = LINK.search(plain)
    assert found, plain
    return found.group(1)


async def _confirm(client, path, ua=BROWSER_UA):
    page = await client.get(path)
    assert page.status_code == 200, page.text
    csrf = CSRF.search(page.text).group(1)
    return await client.post(path, data={"csrf": csrf}, headers={"User-Agent": ua})


async def test_pending_until_confirmed_then_the_gate_allows(mail_client, crm, db, conn,
                                                            mail_settings, smtp):  # fmt: skip
    s = await _subject_with_consent_basis(mail_client, crm)
    r = await mail_client.post("/v1/consent-events", json=_body(subject_id=s["id"]), headers=crm)
    assert r.status_code == 202, r.text
    pending = r.json()
    assert pending["status"] == "pending" and pending["email_sent"] is True
    assert pending["subject_id"] == s["id"] and pending["purpose"] == PURPOSE
    row = await _row(db, "SELECT * FROM double_opt_ins WHERE id = :i", i=pending["id"])
    assert row.state == "pending" and row.confirmed_at is None and row.request["notice_text"]
    assert await _row(db, "SELECT 1 FROM consent_events WHERE id = :i", i=pending["id"]) is None
    assert await _row(db, "SELECT 1 FROM consent_state WHERE subject_id = :s",
                      s=s["id"]) is None  # fmt: skip
    assert (await _decide(mail_client, crm, s["id"]))["reasons"] == ["consent_missing"]

    assert await _send(conn, mail_settings) == 1
    [message] = smtp.inbox.messages
    assert message["To"] == s["email"]
    assert "List-Unsubscribe" not in message and "List-Unsubscribe-Post" not in message
    controller = (await mail_client.get("/v1/controller", headers=crm)).json()
    assert controller["name"] in message["From"] and controller["email"] in message["From"]
    assert message.get_content_type() == "multipart/alternative"
    html = message.get_body(("html",)).get_content()
    path = _link(message)
    assert path in html and f"<{pending['id']}@" in message["Message-ID"]

    page = await mail_client.get(path)
    assert page.status_code == 200 and NOTICE in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["cache-control"] == "no-store"
    assert page.text.count("<button") == 1
    assert await _row(db, "SELECT 1 FROM consent_events WHERE id = :i", i=pending["id"]) is None

    done = await _confirm(mail_client, path)
    assert done.status_code == 200 and "confirmed" in done.text
    event = await _row(db, "SELECT * FROM consent_events WHERE id = :i", i=pending["id"])
    assert event.action == "given" and event.method == "web_form"
    assert event.form_id == "newsletter" and event.notice_sha256
    row = await _row(db, "SELECT * FROM double_opt_ins WHERE id = :i", i=pending["id"])
    assert row.state == "confirmed" and row.confirmed_at is not None
    assert row.confirmed_user_agent == BROWSER_UA
    assert re.fullmatch(r"[0-9a-f]{64}", row.confirmed_ip_hash) and "203.0" not in str(row)
    state = await _row(db, "SELECT * FROM consent_state WHERE subject_id = :s", s=s["id"])
    assert state.status == "given" and state.event_id == event.id
    decision = await _decide(mail_client, crm, s["id"])
    assert decision["allowed"] is True, decision
    # The consent history shows how it was confirmed, as stored.
    listed = (
        await mail_client.get("/v1/consent-events", params={"subject_id": s["id"]}, headers=crm)
    ).json()
    confirmed = [e for e in listed["items"] if e["id"] == str(pending["id"])]
    assert confirmed and confirmed[0]["confirmation"]["user_agent"] == BROWSER_UA, listed
    assert confirmed[0]["confirmation"]["ip_hash"] == row.confirmed_ip_hash

    shown = await mail_client.get(path)  # already confirmed: no button
    assert "Already confirmed" in shown.text and "<form" not in shown.text
    csrf = CSRF.search(page.text).group(1)
    again = await mail_client.post(path, data={"csrf": csrf})  # a second press changes nothing
    assert again.status_code == 200
    count = await _row(db, "SELECT count(*) AS n FROM consent_events WHERE subject_id = :s",
                       s=s["id"])  # fmt: skip
    assert count.n == 1


async def test_consent_becomes_the_basis_only_on_confirmation(mail_client, make_key, crm, db,
                                                              conn, mail_settings, smtp):  # fmt: skip
    website = await make_key("website")
    email = f"prospect-{uuid.uuid4().hex[:8]}@example.com"
    r = await mail_client.post("/v1/consent-events", json=_body(email=email), headers=website)
    assert r.status_code == 202, r.text
    sid = r.json()["subject_id"]
    basis_sql = "SELECT basis FROM lawful_bases WHERE subject_id = :s AND purpose = :p"
    assert await _row(db, basis_sql, s=sid, p=PURPOSE) is None
    assert (await _decide(mail_client, crm, sid))["allowed"] is False
    await _send(conn, mail_settings)
    await _confirm(mail_client, _link(smtp.inbox.messages[-1]))
    assert (await _row(db, basis_sql, s=sid, p=PURPOSE)).basis == "consent"
    assert (await _decide(mail_client, crm, sid))["allowed"] is True


async def test_a_repeat_within_the_window_sends_no_second_mail(mail_client, crm, conn,
                                                               mail_settings, smtp):  # fmt: skip
    s = await _subject_with_consent_basis(mail_client, crm)
    first = await mail_client.post("/v1/consent-events", json=_body(subject_id=s["id"]),
                                   headers=crm)  # fmt: skip
    second = await mail_client.post("/v1/consent-events", json=_body(subject_id=s["id"]),
                                    headers=crm)  # fmt: skip
    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"] and second.json()["email_sent"] is False
    assert await _send(conn, mail_settings) == 1
    assert await _send(conn, mail_settings) == 0
    assert len(smtp.inbox.messages) == 1


async def test_smtp_down_then_up_sends_the_mail_later(engine, conn, crm, db, test_settings):
    down = SmtpServer(free_port())  # nothing listens there yet
    settings = _settings(test_settings, down.url)
    app = create_app(settings, engine=engine, session_bind=conn)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:  # fmt: skip
        s = await _subject_with_consent_basis(client, crm)
        r = await client.post("/v1/consent-events", json=_body(subject_id=s["id"]), headers=crm)
    assert r.status_code == 202  # the answer did not wait for SMTP
    assert await _send(conn, settings) == 0
    row = await _row(db, "SELECT * FROM email_outbox WHERE ref = :r", r=r.json()["id"])
    assert row.state == "pending" and row.attempts == 1 and row.next_try_at > utcnow()
    down.start()
    try:
        assert await _send(conn, settings) == 0  # not due yet: back-off
        assert await _send(conn, settings, now=utcnow() + timedelta(minutes=1)) == 1
    finally:
        down.stop()
    assert len(down.inbox.messages) == 1
    row = await _row(db, "SELECT * FROM email_outbox WHERE ref = :r", r=r.json()["id"])
    assert row.state == "sent" and row.sent_at is not None


async def test_expiry_keeps_a_hashed_record_and_erases_the_attempt_only_subject(
    mail_client, make_key, db, conn, mail_settings, smtp
):
    website = await make_key("website")
    email = f"prospect-{uuid.uuid4().hex[:8]}@example.com"
    r = await mail_client.post("/v1/consent-events", json=_body(email=email), headers=website)
    pending = r.json()
    await _send(conn, mail_settings)
    path = _link(smtp.inbox.messages[-1])
    assert await expire_due(db, now=utcnow() + timedelta(days=6)) == 0
    assert await expire_due(db, now=utcnow() + timedelta(days=7, minutes=1)) >= 1
    row = await _row(db, "SELECT * FROM double_opt_ins WHERE id = :i", i=pending["id"])
    assert row.state == "expired" and row.expired_at is not None
    assert row.request is None and row.subject_id is None
    assert re.fullmatch(r"[0-9a-f]{64}", row.email_hash) and row.purpose == PURPOSE
    assert row.requested_at is not None and row.expires_at is not None
    subject = await _row(db, "SELECT * FROM subjects WHERE id = :s", s=pending["subject_id"])
    assert subject.erased_at is not None and subject.email is None
    # The link now shows a plain page and changes nothing.
    page = await mail_client.get(path)
    assert page.status_code == 410 and "expired" in page.text.lower()
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert await _row(db, "SELECT 1 FROM consent_events WHERE id = :i", i=pending["id"]) is None


async def test_a_subject_with_other_records_is_not_erased_on_expiry(mail_client, crm, db, conn,
                                                                    mail_settings):  # fmt: skip
    s = await _subject_with_consent_basis(mail_client, crm)
    r = await mail_client.post("/v1/consent-events", json=_body(subject_id=s["id"]), headers=crm)
    await expire_due(db, now=utcnow() + timedelta(days=8))
    row = await _row(db, "SELECT state FROM double_opt_ins WHERE id = :i", i=r.json()["id"])
    assert row.state == "expired"
    subject = await _row(db, "SELECT erased_at FROM subjects WHERE id = :s", s=s["id"])
    assert subject.erased_at is None
    assert await _send(conn, mail_settings, now=utcnow() + timedelta(days=8)) == 0  # cancelled


async def test_a_tampered_link_shows_a_plain_page_and_changes_nothing(mail_client, crm, db, conn,
                                                                      mail_settings, smtp):  # fmt: skip
    s = await _subject_with_consent_basis(mail_client, crm)
    r = await mail_client.post("/v1/consent-events", json=_body(subject_id=s["id"]), headers=crm)
    await _send(conn, mail_settings)
    path = _link(smtp.inbox.messages[-1])
    body, mac = path.removeprefix("/c/").split(".")
    tampered = f"/c/{body}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
    page = await mail_client.get(tampered)
    assert page.status_code == 404 and "<form" not in page.text
    good_csrf = CSRF.search((await mail_client.get(path)).text).group(1)
    post = await mail_client.post(tampered, data={"csrf": good_csrf})
    assert post.status_code in (403, 404)
    no_csrf = await mail_client.post(path, data={"csrf": "1.x"})
    assert no_csrf.status_code == 403
    assert await _row(db, "SELECT 1 FROM consent_events WHERE id = :i", i=r.json()["id"]) is None
    row = await _row(db, "SELECT state FROM double_opt_ins WHERE id = :i", i=r.json()["id"])
    assert row.state == "pending"


async def test_confirm_by_email_goes_only_with_given(mail_client, crm):
    s = await _subject_with_consent_basis(mail_client, crm)
    body = {"subject_id": s["id"], "purpose": PURPOSE, "action": "withdrawn",
            "confirm_by_email": True}  # fmt: skip
    r = await mail_client.post("/v1/consent-events", json=body, headers=crm)
    assert r.status_code == 422


async def test_a_page_started_request_is_verified_only_by_its_email_link(
    mail_client, crm, db, conn, mail_settings, smtp
):
    s = (await mail_client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    links = (await mail_client.post(f"/v1/subjects/{s['id']}/links", json={},
                                    headers=crm)).json()  # fmt: skip
    pref = "/" + links["preference_url"].split("/", 3)[3]
    csrf = CSRF.search((await mail_client.get(pref)).text).group(1)
    r = await mail_client.post(f"{pref}/request", data={"csrf": csrf, "type": "access"})
    assert r.status_code == 303, r.text
    req_sql = "SELECT * FROM rights_requests WHERE subject_id = :s"
    assert (await _row(db, req_sql, s=s["id"])).status == "received"
    assert await _send(conn, mail_settings) == 1
    message = smtp.inbox.messages[-1]
    assert message["To"] == s["email"] and "List-Unsubscribe" not in message
    path = _link(message)
    page = await mail_client.get(path)
    assert page.status_code == 200
    assert (await _row(db, req_sql, s=s["id"])).status == "received"  # a GET changes nothing
    done = await _confirm(mail_client, path)
    assert done.status_code == 200, done.text
    req = await _row(db, req_sql, s=s["id"])
    assert req.status == "identity_verified" and req.identity_method == "email_link"
