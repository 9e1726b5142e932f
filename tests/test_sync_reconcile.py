"""Reconciliation against the fake MailChimp: a list edited by hand is made equal to the
gate's audience; a person's own unsubscribe becomes their opt-out and is never undone; an
address unknown to the service is reported and left (or unsubscribed on request); each real
run is recorded and audited once; a following worker reconciles when it is due."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from app.cli import build_parser
from app.core.crypto import email_hash
from app.integrations import reconcile
from app.integrations import worker as sync_worker
from app.integrations.status import status_lines
from tests.sync_support import (  # noqa: F401
    NOTICE,
    allowed_subject,
    committed_engine,
    committed_url,
    live,
    serve,
    withdraw,
)
from tests.test_sync_mailchimp import LIST, expected_statuses, fake, md5, worker_for  # noqa: F401
from tests.test_sync_outbox import Clock, run_once
from tests.test_sync_surveymonkey import LIST as SM_LIST
from tests.test_sync_surveymonkey import sm, sm_settings, survey_subject  # noqa: F401

STRANGER = "stranger@example.org"


async def denied_subject(client):
    """A subject the gate denies for email_campaigns (no basis), through the API."""
    email = f"d-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "category": "prospect", "source": "enquiry"}
    r = await client.post("/v1/subjects", json=body, headers=client.crm)
    assert r.status_code == 201, r.text
    return r.json()


async def hand_edited(live, fake, worker_for):
    """After a first sync, the list edited by hand: a member the gate denies added, an
    allowed member deleted, an allowed member unsubscribed by their own action, an address
    unknown to the service added."""
    kept, deleted, self_unsubscribed = [await allowed_subject(live) for _ in range(3)]
    await run_once(worker_for)
    denied = await denied_subject(live)
    fake.add_by_hand(LIST, denied["email"])
    del fake.members(LIST)[md5(deleted["email"])]
    fake.unsubscribe_by_member(LIST, self_unsubscribed["email"])
    fake.add_by_hand(LIST, STRANGER)
    return {"kept": kept, "deleted": deleted, "self": self_unsubscribed, "denied": denied}


async def reconciled(worker_for, **options):
    worker = worker_for(None)
    try:
        return await worker.reconcile(**options)
    finally:
        await worker.aclose()


async def scalar(engine, sql, **params):
    async with engine.connect() as c:
        return (await c.execute(text(sql), params)).scalar()


async def stored(engine):
    """The rows a reconciliation may write."""
    return {
        "decisions": await scalar(engine, "SELECT count(*) FROM decisions"),
        "optouts": await scalar(engine, "SELECT count(*) FROM marketing_optouts"),
        "outbox": await scalar(engine, "SELECT count(*) FROM sync_outbox"),
        "audit": await scalar(
            engine, "SELECT count(*) FROM audit_entries WHERE action = 'sync.reconcile'"
        ),
        "reconciled": await scalar(
            engine, "SELECT count(*) FROM sync_state WHERE reconciled_at IS NOT NULL"
        ),
    }


FOUR = {"unsubscribed": 1, "subscribed": 1, "opted_out": 1, "unknown": 1}


def counts(summary, keys=("unsubscribed", "subscribed", "opted_out", "unknown")):
    return {k: summary[k] for k in keys}


async def test_a_dry_run_changes_nothing_and_reports_the_four(
    live, fake, worker_for, committed_engine
):
    await hand_edited(live, fake, worker_for)
    before_list = {h: dict(m) for h, m in fake.members(LIST).items()}
    before_rows = await stored(committed_engine)
    summary = await reconciled(worker_for, dry_run=True)
    assert counts(summary) == FOUR
    assert summary["dry_run"] is True and summary["members"] == 4 and summary["in_sync"] == 1
    assert summary["unknown_unsubscribed"] == 0 and summary["refused"] == 0
    assert fake.members(LIST) == before_list
    assert await stored(committed_engine) == before_rows
    line = reconcile.describe(summary)
    assert "dry run, nothing changed" in line and "would unsubscribe 1" in line
    assert STRANGER not in line


async def test_a_real_run_makes_the_list_equal_the_audience_but_for_the_unknown(
    live, fake, worker_for, committed_engine, committed_url, test_settings, caplog
):
    people = await hand_edited(live, fake, worker_for)
    with caplog.at_level("INFO", logger="consent_api.sync"):
        summary = await reconciled(worker_for)
    assert counts(summary) == FOUR and summary["dry_run"] is False
    # The unknown address is reported by its keyed hash, never the address or MailChimp's.
    logged = [str(r.__dict__) for r in caplog.records]
    assert any(email_hash(STRANGER) in line for line in logged)
    assert not any(STRANGER in line or md5(STRANGER) in line for line in logged)
    statuses = fake.statuses(LIST)
    subscribed = {h for h, s in statuses.items() if s == "subscribed"}
    assert subscribed - {md5(STRANGER)} == set(await expected_statuses(committed_engine))
    assert subscribed == {
        md5(people["kept"]["email"]),
        md5(people["deleted"]["email"]),
        md5(STRANGER),
    }
    assert statuses[md5(people["denied"]["email"])] == "unsubscribed"
    assert statuses[md5(people["self"]["email"])] == "unsubscribed"  # never re-subscribed
    # Their own unsubscribe is their opt-out, recorded by the worker.
    sources = await scalar(
        committed_engine,
        "SELECT string_agg(source, ',') FROM marketing_optouts WHERE email_hash = :h",
        h=email_hash(people["self"]["email"]),
    )
    assert sources == "mailchimp"
    assert await scalar(committed_engine, "SELECT count(*) FROM marketing_optouts") == 1
    # Audited once, with the counts; shown by `sync status`.
    async with committed_engine.connect() as c:
        rows = (
            await c.execute(
                text("SELECT actor_name, digest FROM audit_entries WHERE action = 'sync.reconcile'")
            )
        ).all()
    assert len(rows) == 1 and rows[0].actor_name.startswith("sync-worker:mailchimp:")
    assert rows[0].digest["unsubscribed"] == 1 and rows[0].digest["unknown"] == 1
    lines = await status_lines(test_settings, committed_url)
    assert "last reconciliation never" not in lines[0]
    assert "unsubscribed 1, subscribed 1, opted_out 1, unknown 1" in lines[0]
    # A second run finds the list equal to the audience.
    again = await reconciled(worker_for)
    assert counts(again) == {"unsubscribed": 0, "subscribed": 0, "opted_out": 0, "unknown": 1}
    assert fake.statuses(LIST) == statuses


async def test_unknown_unsubscribe_takes_the_unknown_address_off(live, fake, worker_for):
    await hand_edited(live, fake, worker_for)
    summary = await reconciled(worker_for, unknown="unsubscribe")
    assert summary["unknown"] == 1 and summary["unknown_unsubscribed"] == 1
    assert fake.statuses(LIST)[md5(STRANGER)] == "unsubscribed"


async def test_a_refused_unsubscribe_waits_in_the_outbox(live, fake, worker_for, committed_engine):
    people = await hand_edited(live, fake, worker_for)
    fake.faults.refuse("PATCH", md5(people["denied"]["email"]), 400)
    summary = await reconciled(worker_for)
    assert summary["refused"] == 1
    state = await scalar(
        committed_engine,
        "SELECT state || ' ' || action FROM sync_outbox WHERE email_hash = :h",
        h=email_hash(people["denied"]["email"]),
    )
    assert state == "pending unsubscribe"
    await run_once(worker_for)  # the next pass makes it
    assert fake.statuses(LIST)[md5(people["denied"]["email"])] == "unsubscribed"


async def test_a_member_we_unsubscribed_is_subscribed_again_once_the_gate_allows(
    live, fake, worker_for
):
    """Our own unsubscribe (consent withdrawn) is no opt-out: consent given again, the
    reconciliation subscribes the member again."""
    person = await allowed_subject(live)
    await run_once(worker_for)
    assert (await withdraw(live, person["id"])).status_code == 201
    await run_once(worker_for)
    assert fake.statuses(LIST)[md5(person["email"])] == "unsubscribed"
    given = {
        "subject_id": person["id"],
        "purpose": "email_campaigns",
        "action": "given",
        "method": "web_form",
        "policy_version": "1",
        "notice_text": NOTICE,
    }
    assert (await live.post("/v1/consent-events", headers=live.crm, json=given)).status_code == 201
    summary = await reconciled(worker_for)
    assert summary["subscribed"] == 1 and summary["opted_out"] == 0
    assert fake.statuses(LIST)[md5(person["email"])] == "subscribed"


async def test_the_schedule_reconciles_when_due(live, fake, worker_for, committed_engine):
    await allowed_subject(live)
    clock = Clock()
    worker = worker_for(None, clock=clock)
    try:
        await worker.run_once()
        first = await denied_subject(live)
        fake.add_by_hand(LIST, first["email"])
        await worker.following_pass()  # never reconciled: due
        assert fake.statuses(LIST)[md5(first["email"])] == "unsubscribed"
        at = await scalar(committed_engine, "SELECT reconciled_at FROM sync_state")
        assert at == clock.now
        second = await denied_subject(live)
        fake.add_by_hand(LIST, second["email"])
        clock.now += timedelta(hours=23)
        await worker.following_pass()  # not yet
        assert fake.statuses(LIST)[md5(second["email"])] == "subscribed"
        clock.now += timedelta(hours=2)
        await worker.following_pass()  # older than 24 hours: due
        assert fake.statuses(LIST)[md5(second["email"])] == "unsubscribed"
    finally:
        await worker.aclose()
    off = worker_for({"sync_reconcile_hours": 0}, clock=clock)
    try:
        clock.now += timedelta(days=30)
        assert await reconcile.if_due(off) is None
    finally:
        await off.aclose()


async def test_the_command_reconciles_and_describes_it(
    live, fake, serve, worker_for, committed_url, test_settings
):
    await hand_edited(live, fake, worker_for)
    made = worker_for(None)
    settings = made.settings
    await made.aclose()
    summary = await sync_worker.run(
        "mailchimp",
        settings,
        committed_url,
        once=False,
        reconcile={"dry_run": True, "unknown": "report"},
    )
    assert counts(summary["reconciled"]) == FOUR
    args = build_parser().parse_args(
        ["sync", "mailchimp", "--reconcile", "--dry-run", "--unknown", "unsubscribe"]
    )
    assert args.reconcile and args.dry_run and args.unknown == "unsubscribe"
    with pytest.raises(SystemExit, match="go with --reconcile"):
        args.func(build_parser().parse_args(["sync", "mailchimp", "--dry-run"]))


async def test_surveymonkey_reconciliation_reports_in_the_same_shape(
    live, sm, committed_engine, committed_url, test_settings
):
    fake, url = sm
    settings = sm_settings(test_settings, fake, url)
    kept, denied = await survey_subject(live), await survey_subject(live, allowed=False)
    for s in (kept, denied):
        fake.add(s["email"])
    fake.add(STRANGER)
    dry = await sync_worker.run(
        "surveymonkey", settings, committed_url, once=False, reconcile={"dry_run": True}
    )
    assert len(fake.emails_in(SM_LIST)) == 3
    done = await sync_worker.run(
        "surveymonkey", settings, committed_url, once=False, reconcile={"dry_run": False}
    )
    for summary in (dry["reconciled"], done["reconciled"]):
        assert set(summary) == {"target", "dry_run", *reconcile.Counts().as_dict()}
        assert counts(summary, ("members", "in_sync", "unsubscribed", "subscribed")) == {
            "members": 3,
            "in_sync": 1,
            "unsubscribed": 1,
            "subscribed": 0,  # contacts are never added to SurveyMonkey
        }
        assert summary["unknown"] == summary["unknown_unsubscribed"] == 1
    assert fake.emails_in(SM_LIST) == {kept["email"]}
    audited = await scalar(
        committed_engine, "SELECT count(*) FROM audit_entries WHERE action = 'sync.reconcile'"
    )
    assert audited == 1
