"""The sync's outbox and the list's webhook, against the fake MailChimp: a removal refused
is tried again until it is done while the feed moves on; an addition MailChimp will never
accept is given up and listed; 401 stops the run in one line; the webhook leaves out the
API's own calls, so every unsubscribe that arrives is the person's."""

from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.core.crypto import email_hash
from app.core.db import create_sessionmaker
from app.integrations import worker as sync_worker
from app.integrations.mailchimp import MailchimpApi
from app.integrations.mailchimp_webhook import setup_webhook
from app.integrations.status import status_lines
from app.models.base import utcnow
from app.services.access import api_keys
from tests.sync_support import (  # noqa: F401
    allowed_subject,
    committed_engine,
    committed_url,
    live,
    serve,
    withdraw,
)
from tests.test_sync_mailchimp import LIST, fake, md5, worker_for  # noqa: F401

SECRET = "test-webhook-secret"


async def run_once(make, *, eager=True, **kw):
    """One pass; `eager=False` is a pass of a worker that keeps following (no --once)."""
    worker = make(None, **kw)
    try:
        await worker.run_once(eager=eager)
    finally:
        await worker.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now


async def _key(engine, role):
    async with create_sessionmaker(engine)() as session:
        key = await api_keys.create_key(session, name=f"{role}-outbox", role=role)
        await session.commit()
    return {"Authorization": f"Bearer {key}"}


async def _position(engine):
    async with engine.connect() as c:
        feed_after = (
            await c.execute(
                text("SELECT feed_after FROM sync_state WHERE target LIKE 'mailchimp:%'")
            )
        ).scalar()
        head = (await c.execute(text("SELECT max(seq) FROM changes"))).scalar()
    return feed_after, head


async def test_a_refused_unsubscribe_waits_while_the_feed_moves_on_then_is_done(
    live, fake, worker_for, committed_engine
):
    person = await allowed_subject(live)
    await run_once(worker_for)
    assert (await withdraw(live, person["id"])).status_code == 201
    newcomer = await allowed_subject(live)
    fake.faults.refuse("PATCH", md5(person["email"]), 400)
    clock = Clock()
    await run_once(worker_for, clock=clock, eager=False)
    # Refused, and waiting; the others were processed and the position moved past it.
    assert fake.statuses(LIST)[md5(person["email"])] == "subscribed"
    assert fake.statuses(LIST)[md5(newcomer["email"])] == "subscribed"
    feed_after, head = await _position(committed_engine)
    assert feed_after == head
    sync = await _key(committed_engine, "sync")
    items = (await live.get("/v1/sync/failures", headers=sync)).json()["items"]
    assert [(i["action"], i["state"], i["last_status"], i["attempts"]) for i in items] == [
        ("unsubscribe", "waiting", 400, 1)
    ]
    assert items[0]["member"] == email_hash(person["email"])
    assert items[0]["subject_id"] == person["id"] and items[0]["next_try_at"]
    assert md5(person["email"]) not in str(items)
    # Before its back-off has passed, a following pass leaves it; after, it is done.
    await run_once(worker_for, clock=clock, eager=False)
    assert fake.faults.count("PATCH", md5(person["email"])) == 0
    clock.now += timedelta(minutes=2)
    await run_once(worker_for, clock=clock, eager=False)
    assert fake.statuses(LIST)[md5(person["email"])] == "unsubscribed"
    assert (await live.get("/v1/sync/failures", headers=sync)).json()["items"] == []


async def test_a_single_run_tries_every_waiting_removal_at_once(live, fake, worker_for):
    person = await allowed_subject(live)
    await run_once(worker_for)
    assert (await withdraw(live, person["id"])).status_code == 201
    fake.faults.refuse("PATCH", md5(person["email"]), 400)
    await run_once(worker_for)
    assert fake.statuses(LIST)[md5(person["email"])] == "subscribed"
    await run_once(worker_for)  # --once: no waiting for the back-off
    assert fake.statuses(LIST)[md5(person["email"])] == "unsubscribed"


async def test_an_addition_mailchimp_never_will_accept_is_given_up_and_listed(
    live, fake, worker_for, committed_engine
):
    await run_once(worker_for)  # first sync of an empty audience
    blocked = await allowed_subject(live)
    waiting = await allowed_subject(live)
    await run_once(worker_for)
    assert (await withdraw(live, waiting["id"])).status_code == 201
    fake.faults.refuse("PUT", md5(blocked["email"]), 400, title="Member In Compliance State")
    fake.faults.refuse("PATCH", md5(waiting["email"]), 400)
    await live.patch(f"/v1/subjects/{blocked['id']}", json={"name": "Ada B"}, headers=live.crm)
    await run_once(worker_for)
    auditor = await _key(committed_engine, "auditor")
    items = (await live.get("/v1/sync/failures", headers=auditor)).json()["items"]
    shapes = {i["action"]: i for i in items}
    assert shapes["upsert"]["state"] == "given_up"
    assert "compliance state" in shapes["upsert"]["given_up_reason"]
    assert shapes["upsert"]["next_try_at"] is None
    assert shapes["upsert"]["last_title"] == "Member In Compliance State"
    assert shapes["unsubscribe"]["state"] == "waiting"
    crm = (await live.get("/v1/sync/failures", headers=live.crm)).status_code
    assert crm == 403
    metrics = (await live.get("/metrics", headers=auditor)).text
    assert f'consent_sync_failures{{target="mailchimp:{LIST}:email_campaigns"}} 2.0' in metrics
    # A given-up addition is not tried again on the next pass.
    puts = fake.faults.count("PUT", md5(blocked["email"]))
    await run_once(worker_for)
    assert fake.faults.count("PUT", md5(blocked["email"])) == puts


async def test_status_prints_positions_and_what_waits(
    live, fake, worker_for, committed_url, test_settings
):
    person = await allowed_subject(live)
    await run_once(worker_for)
    assert (await withdraw(live, person["id"])).status_code == 201
    fake.faults.refuse("PATCH", md5(person["email"]), 400)
    await run_once(worker_for)
    lines = await status_lines(test_settings, committed_url)
    assert lines[0].startswith(f"mailchimp:{LIST}:email_campaigns: feed position ")
    assert "last reconciliation never" in lines[0]
    assert lines[1] == "failures: 1"
    assert "unsubscribe member " + email_hash(person["email"]) in lines[2]
    assert person["email"] not in "\n".join(lines) and md5(person["email"]) not in str(lines)


async def test_401_stops_the_run_in_one_line(live, fake, serve, committed_url, test_settings):
    person = await allowed_subject(live)
    url = serve(fake.app)
    settings = test_settings.model_copy(
        update={
            "mailchimp_api_key": SecretStr(fake.api_key),
            "mailchimp_base_url": f"{url}/3.0",
            "mailchimp_list_id": LIST,
            "sync_backoff_seconds": 0.01,
        }
    )
    fake.faults.refuse("POST", f"/lists/{LIST}", 401)
    with pytest.raises(sync_worker.SyncFailed) as failed:
        await sync_worker.run("mailchimp", settings, committed_url, once=True)
    line = str(failed.value)
    assert "\n" not in line and "refused our credentials (HTTP 401)" in line
    assert "check the API key" in line and person["email"] not in line


# --- the webhook ---------------------------------------------------------------------


async def test_setup_webhook_creates_then_corrects_it_with_user_and_admin_only(
    fake, serve, test_settings
):
    url = serve(fake.app)
    settings = test_settings.model_copy(
        update={
            "mailchimp_api_key": SecretStr(fake.api_key),
            "mailchimp_base_url": f"{url}/3.0",
            "mailchimp_list_id": LIST,
            "public_base_url": "https://consent.example.com",
        }
    )
    api = MailchimpApi(settings)
    try:
        assert (
            await setup_webhook(api, settings) == "webhook created (sources: user, admin; not api)"
        )
        [hook] = fake.webhooks[LIST].values()
        assert hook["url"] == f"https://consent.example.com/v1/webhooks/mailchimp?secret={SECRET}"
        assert hook["sources"] == {"user": True, "admin": True, "api": False}
        assert {k for k, v in hook["events"].items() if v} == {"unsubscribe", "cleaned", "upemail"}
        # Someone ticks "by the API" and "subscribes" by hand: the next setup corrects it.
        hook["sources"]["api"] = True
        hook["events"]["subscribe"] = True
        assert await setup_webhook(api, settings) == "webhook corrected (1)"
        [hook] = fake.webhooks[LIST].values()
        assert hook["sources"] == {"user": True, "admin": True, "api": False}
        assert not hook["events"]["subscribe"]
        assert await setup_webhook(api, settings) == "webhook already right"
        assert len(fake.webhooks[LIST]) == 1
    finally:
        await api.aclose()


async def test_a_persons_unsubscribe_during_the_workers_own_is_an_opt_out(
    live, fake, worker_for, committed_engine
):
    """The person unsubscribes in MailChimp while the worker is unsubscribing them (their
    consent was withdrawn): their unsubscribe is recorded as their opt-out."""
    person = await allowed_subject(live)
    await run_once(worker_for)
    assert (await withdraw(live, person["id"])).status_code == 201
    answers = []

    async def persons_own(request: httpx.Request) -> None:
        if request.method == "PATCH" and md5(person["email"]) in request.url.path:
            form = {
                "type": "unsubscribe",
                "fired_at": "2026-11-25 06:30:00",
                "data[email]": person["email"],
                "data[list_id]": LIST,
                "data[reason]": "manual",
            }
            answers.append(await live.post(f"/v1/webhooks/mailchimp?secret={SECRET}", data=form))

    await run_once(worker_for, event_hooks={"request": [persons_own]})
    assert answers and answers[0].json()["recorded"] is True  # (a repeat is a replay)
    async with committed_engine.connect() as c:
        sources = (
            await c.execute(
                text("SELECT source FROM marketing_optouts WHERE email_hash = :h"),
                {"h": email_hash(person["email"])},
            )
        ).scalars()
        assert list(sources) == ["mailchimp"]


async def test_the_workers_own_unsubscribe_read_back_is_no_opt_out(
    live, fake, worker_for, committed_engine
):
    """The read-back (for lost webhooks) sees the member unsubscribed: MailChimp has changed
    nothing since our own call's answer, so it is not taken for the person's opt-out."""
    person = await allowed_subject(live)
    await run_once(worker_for)
    assert (await withdraw(live, person["id"])).status_code == 201
    await run_once(worker_for)
    await run_once(worker_for)
    assert fake.statuses(LIST)[md5(person["email"])] == "unsubscribed"
    async with committed_engine.connect() as c:
        n = (await c.execute(text("SELECT count(*) FROM marketing_optouts"))).scalar()
    assert n == 0
