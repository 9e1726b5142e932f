"""Security review, finding 8 (first half): control characters in consent evidence, notices
and MailChimp webhook fields; the webhook secret's strength and throttling; the MailChimp
worker's log lines name the keyed hash, never MailChimp's MD5 of the address."""

import hashlib
import logging
import re
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError
from sqlalchemy import text

from app.core.config import Settings, settings_error_line
from app.core.crypto import email_hash
from tests.conftest import new_subject
from tests.sync_support import (  # noqa: F401
    allowed_subject,
    committed_engine,
    committed_url,
    live,
    serve,
    withdraw,
)
from tests.test_consent import give
from tests.test_sync_mailchimp import LIST, fake, md5, run_once, worker_for  # noqa: F401

WEBHOOK = "/v1/webhooks/mailchimp?secret=test-webhook-secret"
# Terminal escape, bell, a forged line break, a right-to-left override.
HOSTILE = {"ESC": "\x1b[31m", "BEL": "\x07", "CRLF": "\r\nX-Forged: 1", "RLO": "\u202e"}


async def _count(db, sql, **params):
    return (await db.execute(text(sql), params)).scalar()


async def _preference_page(client, crm, sid):
    """The subject's preference page (path) and its form token, with consent given."""
    purpose = "content_subscriptions"
    await client.put(f"/v1/subjects/{sid}/bases/{purpose}", json={"basis": "consent"}, headers=crm)
    r = await client.post("/v1/consent-events", json=give(sid, purpose=purpose), headers=crm)
    assert r.status_code == 201, r.text
    r = await client.post(f"/v1/subjects/{sid}/links", json={"purpose": purpose}, headers=crm)
    assert r.status_code == 200, r.text
    path = "/" + r.json()["preference_url"].split("/", 3)[3]
    csrf = re.search(r'name="csrf" value="([^"]+)"', (await client.get(path)).text)
    assert csrf, "no form token on the page"
    return path, csrf.group(1)


async def test_control_characters_in_evidence_and_notice_are_refused_and_nothing_stored(
    client, crm, db
):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    await client.put(
        f"/v1/subjects/{s['id']}/bases/content_subscriptions",
        json={"basis": "consent"},
        headers=crm,
    )
    good = give(s["id"])
    for name, bad in HOSTILE.items():
        for field in ("form_id", "page_url", "user_agent"):
            body = {**good, "evidence": {**good["evidence"], field: f"form{bad}one"}}
            r = await client.post("/v1/consent-events", json=body, headers=crm)
            assert r.status_code == 422, (name, field, r.text)
            problem = r.json()
            assert problem["errors"][0]["loc"][-2:] == ["evidence", field], problem
            assert "control or invisible" in problem["errors"][0]["msg"]
            assert bad not in r.text  # the value is not echoed back
        body = {**good, "notice_text": f"Yes, e-mail me{bad} release news."}
        r = await client.post("/v1/consent-events", json=body, headers=crm)
        assert r.status_code == 422, (name, r.text)
        assert r.json()["errors"][0]["loc"][-1] == "notice_text"
    # An e-mail'd subject is not created either when the evidence is refused.
    email = new_subject()["email"]
    body = {**give(email=email), "evidence": {"user_agent": "Mozilla\x1b]0;pwned\x07"}}
    assert (await client.post("/v1/consent-events", json=body, headers=crm)).status_code == 422
    assert (
        await _count(db, "SELECT count(*) FROM consent_events WHERE subject_id = :s", s=s["id"])
        == 0
    )
    assert await _count(db, "SELECT count(*) FROM subjects WHERE email = :e", e=email) == 0
    assert (
        await _count(db, "SELECT count(*) FROM consent_notices WHERE text LIKE '%release news.'")
        == 0
    )
    # A notice of several paragraphs (LF) is prose and is kept as sent; ZWJ stays too.
    notice = "Yes, e-mail me release news.\n\nYou can withdraw at any time 👩\u200d💻."
    r = await client.post("/v1/consent-events", json={**good, "notice_text": notice}, headers=crm)
    assert r.status_code == 201, r.text
    stored = await _count(
        db,
        "SELECT n.text FROM consent_events e JOIN consent_notices n ON n.sha256 = e.notice_sha256"
        " WHERE e.subject_id = :s",
        s=s["id"],
    )
    assert stored == notice
    assert r.json()["notice_sha256"] == hashlib.sha256(notice.encode()).hexdigest()


async def test_the_person_page_replaces_a_hostile_user_agent_instead_of_failing(client, crm, db):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    p, csrf = await _preference_page(client, crm, s["id"])
    # ESC, BEL, and (as Latin-1, how a header is read) the bytes of U+202E: a C1 control.
    agent = b"Mozilla/5.0 \x1b[2J\x07 \xe2\x80\xae"
    r = await client.post(
        p + "/withdraw",
        data={"csrf": csrf, "purpose": "content_subscriptions"},
        headers={"User-Agent": agent},
    )
    assert r.status_code == 303, r.text
    stored = await _count(
        db,
        "SELECT user_agent FROM consent_events WHERE subject_id = :s AND action = 'withdrawn'",
        s=s["id"],
    )
    assert stored == "Mozilla/5.0 \ufffd[2J\ufffd \u00e2\ufffd\u00ae"


async def test_webhook_fields_with_control_characters_or_no_address_are_refused(client, crm, db):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()

    def event(**fields):
        body = {
            "type": "unsubscribe",
            "fired_at": "2026-11-25 06:30:00",
            "data[email]": s["email"],
            "data[list_id]": "a6b5da1054",
            "data[reason]": "manual",
        }
        return {**body, **fields}

    refused = []
    for name, bad in HOSTILE.items():
        for field in ("data[reason]", "data[list_id]", "fired_at", "type"):
            refused.append((field, event(**{field: f"manual{bad}"})))
    not_addresses = (
        "not-an-address",
        f"Ada <{s['email']}>",  # a display name
        f"{s['email']}\r\nBcc: someone@example.com",
        s["email"].replace("@", "\u202e@"),
        f"{s['email']}\x1b",
        "@example.com",
    )
    for bad in not_addresses:
        refused.append(("data[email]", event(**{"data[email]": bad})))
        refused.append(
            (
                "data[old_email]",
                event(type="upemail", **{"data[old_email]": bad, "data[new_email]": s["email"]}),
            )
        )
        refused.append(
            (
                "data[new_email]",
                event(type="upemail", **{"data[old_email]": s["email"], "data[new_email]": bad}),
            )
        )
    for field, body in refused:
        r = await client.post(WEBHOOK, data=body)
        assert r.status_code == 422, (field, body, r.text)
        assert r.json()["field"] == field, r.json()
        assert s["email"] not in r.text
    assert await _count(db, "SELECT count(*) FROM mailchimp_events") == 0
    assert (
        await _count(db, "SELECT count(*) FROM marketing_optouts WHERE source = 'mailchimp'") == 0
    )
    assert (await _count(db, "SELECT count(*) FROM changes WHERE kind LIKE 'mailchimp.%'")) == 0
    # The same event without the hostile characters is recorded (an address is normalised).
    r = await client.post(WEBHOOK, data=event(**{"data[email]": f"  {s['email'].upper()} "}))
    assert r.status_code == 200 and r.json() == {"type": "unsubscribe", "recorded": True}
    assert await _count(db, "SELECT email_hash FROM mailchimp_events") == email_hash(s["email"])


def test_production_refuses_a_weak_webhook_secret(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("CONSENT_"):
            monkeypatch.delenv(key)
    strong: dict[str, Any] = {
        "env": "production",
        "database_url": "postgresql+asyncpg://consent@db.internal/consent",
        "secret_key": "Zq8-vTn3LwP0xYk7RbC2mHs9dJf4gUa1E",
        "signing_key_pem": "pem",
    }
    for weak in ("§", "Short-but-varied-9", "ab" * 20):
        with pytest.raises(ValidationError) as caught:
            Settings(**strong, mailchimp_webhook_secret=weak)
        line = settings_error_line(caught.value)
        assert "\n" not in line
        assert "CONSENT_MAILCHIMP_WEBHOOK_SECRET is too weak" in line, line
        assert weak not in line
    ok = Settings(**strong, mailchimp_webhook_secret="H7x-Lp2qRt9vWz4mKs8dNf3gYb6cJa1E")
    assert ok.mailchimp_webhook_secret == SecretStr("H7x-Lp2qRt9vWz4mKs8dNf3gYb6cJa1E")
    assert Settings(**strong).mailchimp_webhook_secret is None  # unset: the webhook is off
    # Development keeps accepting a short one (the test suite's own).
    assert Settings(env="development", mailchimp_webhook_secret="x").env == "development"


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("consent_api_auth_failures_total", {"reason": reason}) or 0.0


async def test_wrong_webhook_secrets_are_counted_and_throttled(app, client, crm, db):
    s = (await client.post("/v1/subjects", json=new_subject(), headers=crm)).json()
    body = {"type": "unsubscribe", "data[email]": s["email"], "data[reason]": "manual"}
    allowed = app.state.settings.auth_failures_allowed
    assert allowed == 20
    before = _failures("webhook_secret")
    for i in range(allowed):
        url = "/v1/webhooks/mailchimp" + ("" if i % 4 == 0 else f"?secret=guess-{i}")
        r = await client.post(url, data=body) if i % 2 else await client.get(url)
        assert r.status_code == 401, (i, r.text)
    assert _failures("webhook_secret") - before == allowed
    # The 21st wrong secret from this address: 429 with Retry-After, like the guard's.
    for r in (
        await client.post("/v1/webhooks/mailchimp?secret=guess-21", data=body),
        await client.get("/v1/webhooks/mailchimp?secret=guess-22"),
    ):
        assert r.status_code == 429, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("too-many-requests")
        assert 1 <= int(r.headers["retry-after"]) <= 61
    assert _failures("webhook_secret") - before == allowed + 2
    # Counted with the other failed authentications of the address: a bad API key is
    # throttled too.
    r = await client.get("/v1/purposes", headers={"Authorization": "Bearer cak_wrong"})
    assert r.status_code == 429
    assert app.state.auth_limiter.retry_after("127.0.0.1") >= 1
    assert await _count(db, "SELECT count(*) FROM mailchimp_events") == 0
    # As for API keys, the throttle refuses failures only: MailChimp's own delivery (the
    # right secret) is still recorded.
    r = await client.post(WEBHOOK, data=body)
    assert r.status_code == 200 and r.json()["recorded"] is True


async def test_a_refused_mailchimp_call_is_logged_by_the_keyed_hash(live, fake, worker_for, caplog):
    person = await allowed_subject(live)
    await run_once(worker_for)  # first sync: subscribed in MailChimp
    assert fake.statuses(LIST)[md5(person["email"])] == "subscribed"
    r = await withdraw(live, person["id"])
    assert r.status_code == 201, r.text
    fake.faults.fail_next(1, 400)  # the unsubscribe call is refused
    with caplog.at_level(logging.INFO, logger="consent_api.sync"):
        await run_once(worker_for)
    refused = [r for r in caplog.records if r.getMessage().startswith("mailchimp refused")]
    assert [(r.action, r.status) for r in refused] == [("unsubscribe", 400)]
    assert refused[0].email_hash == email_hash(person["email"])
    assert refused[0].subject_id == person["id"]
    for record in caplog.records:
        everything = str(vars(record))
        assert md5(person["email"]) not in everything
        assert person["email"] not in everything


async def test_a_read_back_member_the_service_cannot_accept_is_skipped(
    live, fake, worker_for, committed_engine, caplog
):
    odd = "Odd.Member@localhost"  # a special-use domain: no subject can have it
    fake.members(LIST)[md5(odd)] = {
        "id": md5(odd),
        "email_address": odd,
        "status": "unsubscribed",
        "merge_fields": {},
        "last_changed": "2020-01-01T00:00:00+00:00",
        "list_id": LIST,
    }
    person = await allowed_subject(live)
    with caplog.at_level(logging.INFO, logger="consent_api.sync"):
        await run_once(worker_for)  # the pass completes
    skipped = [r for r in caplog.records if r.getMessage().startswith("mailchimp member not")]
    assert [(r.kind, r.field) for r in skipped] == [("unsubscribe", "data[email]")]
    assert odd.lower() not in caplog.text.lower()
    assert fake.statuses(LIST)[md5(person["email"])] == "subscribed"
    async with committed_engine.connect() as c:
        assert (await c.execute(text("SELECT count(*) FROM mailchimp_events"))).scalar() == 0
