"""Copies per purpose stay equal under faults (issue point 6). The worker runs against the
fake MailChimp while about one call in ten is refused at random (400 on a write, 500/503 on
any call), people withdraw consent and unsubscribe in MailChimp concurrently with its
passes (some webhooks lost), time-driven moments pass (interest ceases, a contract ends:
stored instants moved back and the gate's clock run), new subjects arrive, and the list is
edited by hand (a member the gate denies added, allowed members deleted). Once the faults
stop, the worker is run until quiet and one reconciliation runs: the list's subscribed
members are then exactly the gate's audience, and every person's own unsubscribe is their
opt-out. Deterministic: seeded random, no sleeping, the worker's clock injected."""

import asyncio
import os
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text

from app.background import clock_tick
from app.core.crypto import email_hash
from app.core.db import create_sessionmaker
from app.models.base import utcnow
from tests.fakes.mailchimp import FakeMailchimp, error
from tests.sync_support import (  # noqa: F401
    allowed_subject,
    committed_engine,
    committed_url,
    live,
    serve,
    withdraw,
)
from tests.test_sync_mailchimp import LIST, md5, worker_for  # noqa: F401
from tests.test_sync_outbox import SECRET, Clock, run_once
from tests.test_sync_reconcile import denied_subject

SEED = int(os.environ.get("DRIFT_SEED", "20261125"))
PEOPLE = 60
RATE = 0.10
PASS = timedelta(minutes=2)  # the worker's clock between passes


class Chaos:
    """ASGI middleware in front of the fake: while on, each call is refused at random with
    probability `rate` (seeded): 500 or 503 on any call (the client retries them), 400 on a
    write (MailChimp changed nothing; the outbox tries it again). Reads are never answered
    400 (MailChimp does not refuse a list read at random)."""

    def __init__(self, app, seed: int, rate: float) -> None:
        self.app, self.rng, self.rate = app, random.Random(seed), rate
        self.on = False
        self.refused: dict[int, int] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.on and self.rng.random() < self.rate:
            codes = (500, 503) if scope["method"] == "GET" else (400, 400, 500, 503)
            code = self.rng.choice(codes)
            self.refused[code] = self.refused.get(code, 0) + 1
            await error(code)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@pytest.fixture
def fake():
    made = FakeMailchimp(list_ids=(LIST,))
    made.chaos = Chaos(made.app, SEED, RATE)
    made.app = made.chaos  # what `worker_for` serves
    return made


async def _scalar(engine, sql, **params):
    async with engine.connect() as c:
        return (await c.execute(text(sql), params)).scalar()


async def _move_back(engine, ids, interval, *, contracts=False, interest=False):
    """Time passes for these subjects: their stored instants (and the gate's moments)
    moved back by `interval`, the same as waiting that long."""
    params = {"ids": [str(i) for i in ids]}
    async with engine.begin() as c:
        if interest:
            await c.execute(
                text(
                    f"UPDATE subjects SET interest_ceased_at = interest_ceased_at"
                    f" - interval '{interval}' WHERE id = ANY(CAST(:ids AS uuid[]))"
                ),
                params,
            )
        if contracts:
            await c.execute(
                text(
                    f"UPDATE lawful_bases SET contract_end = contract_end - interval '{interval}'"
                    " WHERE basis = 'contract' AND subject_id = ANY(CAST(:ids AS uuid[]))"
                ),
                params,
            )
        await c.execute(
            text(
                f"UPDATE gate_moments SET due_at = due_at - interval '{interval}'"
                " WHERE subject_id = ANY(CAST(:ids AS uuid[]))"
            ),
            params,
        )


async def _own_unsubscribe(live, fake, person, *, webhook=True):
    """The person clicks unsubscribe in a campaign; MailChimp fires the webhook (or it is
    lost on the way)."""
    await asyncio.sleep(0)  # let the worker's pass start first
    fake.unsubscribe_by_member(LIST, person["email"])
    if not webhook:
        return
    form = {
        "type": "unsubscribe",
        "fired_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "data[email]": person["email"],
        "data[list_id]": LIST,
        "data[reason]": "manual",
    }
    r = await live.post(f"/v1/webhooks/mailchimp?secret={SECRET}", data=form)
    assert r.status_code == 200, r.text


async def _withdraws(live, person):
    await asyncio.sleep(0)
    r = await withdraw(live, person["id"])
    assert r.status_code == 201, r.text


async def _renamed(live, person, name):
    """Ordinary traffic: a rectification, which the worker carries to the list (or, the
    gate denying, takes the member off again)."""
    await asyncio.sleep(0)
    body = {"name": name}
    r = await live.patch(f"/v1/subjects/{person['id']}", json=body, headers=live.crm)
    assert r.status_code == 200, r.text


async def _pass_during(live, worker_for, clock, rng, people, *happening):
    """A worker pass (`--once`) with the people's actions, and some renames, meanwhile."""
    clock.now += PASS
    names = ("Ada Byron", "Mary Somerville", "Grace Hopper", "Karen Jones")
    renames = [_renamed(live, p, rng.choice(names)) for p in rng.sample(people, 10)]
    await asyncio.gather(run_once(worker_for, clock=clock), *happening, *renames)


async def _waiting(engine):
    return await _scalar(engine, "SELECT count(*) FROM sync_outbox WHERE state = 'pending'")


async def test_the_list_equals_the_audience_after_faults_and_one_reconciliation(
    live, fake, worker_for, committed_engine
):
    rng = random.Random(SEED)
    people = [await allowed_subject(live) for _ in range(PEOPLE)]
    rng.shuffle(people)
    ceasing, ending = people[0:6], people[6:12]
    withdrawing, own_hooked, own_lost = people[12:24], people[24:33], people[33:39]
    both, deleted_by_hand = people[39:43], people[43:46]
    # Interest ceases tomorrow (prospects); a contract ends in two days (customers: their
    # retention runs 72 months from its end, then the gate denies every purpose).
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for p in ceasing:
        body = {"category": "prospect", "interest_ceased_at": tomorrow}
        r = await live.patch(f"/v1/subjects/{p['id']}", json=body, headers=live.crm)
        assert r.status_code == 200, r.text
    end = (date.today() + timedelta(days=2)).isoformat()
    for p in ending:
        body = {"basis": "contract", "contract_ref": "C-7", "contract_end": end}
        r = await live.put(
            f"/v1/subjects/{p['id']}/bases/account_management", json=body, headers=live.crm
        )
        assert r.status_code == 200, r.text
    denied = [await denied_subject(live) for _ in range(2)]

    clock = Clock()
    fake.clock = clock  # MailChimp's `last_changed` moves with the worker's clock
    await run_once(worker_for, clock=clock)  # the first sync, before the faults
    assert fake.statuses(LIST) == {md5(p["email"]): "subscribed" for p in people}

    fake.chaos.on = True
    maker = create_sessionmaker(committed_engine)
    # Round 1: withdrawals and unsubscribes (their webhooks arrive) during a pass.
    await _pass_during(
        live,
        worker_for,
        clock,
        rng,
        people,
        *(_withdraws(live, p) for p in withdrawing[:6]),
        *(_own_unsubscribe(live, fake, p) for p in own_hooked[:4]),
    )
    # Round 2: interest ceases (two days pass for them; the clock feeds the moments);
    # unsubscribes whose webhooks are lost; newcomers; the same people both withdraw and
    # unsubscribe in MailChimp.
    await _move_back(committed_engine, [p["id"] for p in ceasing], "2 days", interest=True)
    assert await clock_tick(maker, now=utcnow()) == len(ceasing)
    newcomers = [await allowed_subject(live, name="Grace Hopper") for _ in range(3)]
    await _pass_during(
        live,
        worker_for,
        clock,
        rng,
        people,
        *(_own_unsubscribe(live, fake, p, webhook=False) for p in own_lost[:3]),
        *(_withdraws(live, p) for p in both),
        *(_own_unsubscribe(live, fake, p) for p in both),
    )
    # Round 3: the list edited by hand: members the gate denies added (two never allowed,
    # two whose consent was withdrawn and whom the worker took off), allowed ones deleted.
    # Contracts end and 80 months pass for them.
    re_added = withdrawing[:2]
    for s in [*denied, *re_added]:
        fake.add_by_hand(LIST, s["email"])
    for p in deleted_by_hand:
        del fake.members(LIST)[md5(p["email"])]
    await _move_back(committed_engine, [p["id"] for p in ending], "80 months", contracts=True)
    assert await clock_tick(maker, now=utcnow()) >= len(ending)
    await _pass_during(
        live,
        worker_for,
        clock,
        rng,
        people,
        *(_withdraws(live, p) for p in withdrawing[6:]),
        *(_own_unsubscribe(live, fake, p) for p in own_hooked[4:]),
        *(_own_unsubscribe(live, fake, p, webhook=False) for p in own_lost[3:]),
    )
    # Round 4: more newcomers, and a pass with the faults still on.
    newcomers += [await allowed_subject(live, name="Grace Hopper") for _ in range(3)]
    await _pass_during(live, worker_for, clock, rng, people)
    assert sum(fake.chaos.refused.values()) >= 3, fake.chaos.refused

    # The faults stop; the worker runs until quiet (every back-off passed between passes).
    fake.chaos.on = False
    for _ in range(10):
        clock.now += timedelta(hours=7)
        await run_once(worker_for, clock=clock)
        if await _waiting(committed_engine) == 0:
            break
    assert await _waiting(committed_engine) == 0
    statuses = fake.statuses(LIST)
    # What the worker itself did (before any reconciliation): the moments, the withdrawals
    # and the unsubscribes reached the list; newcomers are on it.
    gone = [*ceasing, *ending, *withdrawing[2:], *both, *own_hooked, *own_lost]
    assert {statuses[md5(p["email"])] for p in gone} == {"unsubscribed"}
    assert {statuses[md5(p["email"])] for p in newcomers} == {"subscribed"}

    hand_added = [s for s in [*denied, *re_added] if statuses[md5(s["email"])] == "subscribed"]
    assert {s["id"] for s in denied} <= {s["id"] for s in hand_added}
    # (a deleted member renamed since is back already: the worker carried the rename)
    missing = [p for p in deleted_by_hand if md5(p["email"]) not in statuses]
    worker = worker_for(None, clock=clock)
    try:
        summary = await worker.reconcile()
    finally:
        await worker.aclose()
    # The hand edits were all it found: the denied members added, the allowed ones deleted.
    assert {k: summary[k] for k in ("unsubscribed", "subscribed", "unknown", "refused")} == {
        "unsubscribed": len(hand_added),
        "subscribed": len(missing),
        "unknown": 0,
        "refused": 0,
    }, summary
    assert await _waiting(committed_engine) == 0

    # The list's subscribed members are exactly the gate's audience.
    r = await live.get(
        "/v1/audiences/email_campaigns",
        params={"recipient": "mailchimp", "limit": 1000},
        headers=live.crm,
    )
    assert r.status_code == 200 and r.json()["next_cursor"] is None, r.text
    audience = {md5(m["email"]) for m in r.json()["items"]}
    statuses = fake.statuses(LIST)
    subscribed = {h for h, s in statuses.items() if s == "subscribed"}
    assert subscribed == audience
    expected = {md5(p["email"]) for p in people + newcomers if p not in gone + re_added}
    assert audience == expected  # the audience is the one the story leads to
    ours = {md5(s["email"]) for s in people + newcomers + denied}
    assert set(statuses) <= ours  # the test added no address unknown to the service
    # Every person's own unsubscribe (webhook arrived or lost) is their opt-out.
    for p in [*own_hooked, *own_lost, *both]:
        assert statuses[md5(p["email"])] == "unsubscribed"
        source = await _scalar(
            committed_engine,
            "SELECT string_agg(source, ',') FROM marketing_optouts WHERE email_hash = :h",
            h=email_hash(p["email"]),
        )
        assert source == "mailchimp", p["email"]
    # Nobody else has an opt-out: the worker's own unsubscribes are never taken for a
    # person's. (The people who both withdraw and unsubscribe always have their webhook
    # delivered: a lost one made within minutes before our own unsubscribe cannot be told
    # from ours, see `outbox.CLOCK_SLACK`; one made earlier is tested below.)
    everyone = await _scalar(committed_engine, "SELECT count(*) FROM marketing_optouts")
    assert everyone == len([*own_hooked, *own_lost, *both])


# --- what the drift test found ---------------------------------------------------------


async def test_a_refused_repeat_of_our_own_unsubscribe_is_no_opt_out(
    live, fake, worker_for, committed_engine
):
    """Consent withdrawn: the worker unsubscribes the member (done). Any later feed entry
    for the person (here a rename) makes the worker unsubscribe the held member again; that
    call is refused once, so the outbox row waits again. The member's status is still the
    one our first unsubscribe set: the read-back must not take it for the person's own opt-out
    (found by the drift test: it did, and every direct-marketing purpose was then denied to
    them for good)."""
    person = await allowed_subject(live)
    await run_once(worker_for)
    assert (await withdraw(live, person["id"])).status_code == 201
    await run_once(worker_for)
    assert fake.statuses(LIST)[md5(person["email"])] == "unsubscribed"
    body = {"name": "Ada Byron"}
    r = await live.patch(f"/v1/subjects/{person['id']}", json=body, headers=live.crm)
    assert r.status_code == 200, r.text
    fake.faults.refuse("PATCH", md5(person["email"]), 400)
    await run_once(worker_for)
    assert await _scalar(committed_engine, "SELECT count(*) FROM marketing_optouts") == 0


async def test_an_own_unsubscribe_before_our_own_is_still_an_opt_out(
    live, fake, worker_for, committed_engine
):
    """The person unsubscribes in a MailChimp campaign and the webhook is lost; ten minutes
    later they also withdraw consent through the service. The worker's PATCH finds the
    member unsubscribed already: MailChimp's `last_changed` is the person's, older than our
    intent, so the status is not ours, and the reconciliation records their opt-out."""
    person = await allowed_subject(live)
    await run_once(worker_for)
    fake.unsubscribe_by_member(LIST, person["email"], ago=timedelta(minutes=10))
    assert (await withdraw(live, person["id"])).status_code == 201
    await run_once(worker_for)
    worker = worker_for(None)
    try:
        await worker.reconcile()
    finally:
        await worker.aclose()
    source = await _scalar(
        committed_engine,
        "SELECT string_agg(source, ',') FROM marketing_optouts WHERE email_hash = :h",
        h=email_hash(person["email"]),
    )
    assert source == "mailchimp"


async def test_a_repeat_of_our_own_unsubscribe_hours_later_is_still_ours(
    live, fake, worker_for, committed_engine
):
    """Our unsubscribe is done; hours later (the worker's clock) a feed entry makes the
    worker unsubscribe the member again. MailChimp's `last_changed` is then older than the
    new intent, but it is the one our first call set: still ours, so the reconciliation
    records no opt-out the person never made."""
    person = await allowed_subject(live)
    clock = Clock()
    fake.clock = clock
    await run_once(worker_for, clock=clock)
    assert (await withdraw(live, person["id"])).status_code == 201
    await run_once(worker_for, clock=clock)
    first = await _scalar(
        committed_engine,
        "SELECT remote_changed_at FROM sync_outbox WHERE remote_id = :r",
        r=md5(person["email"]),
    )
    assert first is not None and fake.statuses(LIST)[md5(person["email"])] == "unsubscribed"
    clock.now += timedelta(hours=3)
    r = await live.patch(
        f"/v1/subjects/{person['id']}", json={"name": "Ada Byron"}, headers=live.crm
    )
    assert r.status_code == 200, r.text
    await run_once(worker_for, clock=clock)
    again = await _scalar(
        committed_engine,
        "SELECT remote_changed_at FROM sync_outbox WHERE remote_id = :r AND created_at = :c",
        r=md5(person["email"]),
        c=clock.now,
    )
    assert again == first  # the new intent (written at the clock's time) kept our status
    worker = worker_for(None, clock=clock)
    try:
        await worker.reconcile()
    finally:
        await worker.aclose()
    assert await _scalar(committed_engine, "SELECT count(*) FROM marketing_optouts") == 0
