"""Reconciliation: make a list equal to the gate's audience, on demand
(`consent-api sync mailchimp|surveymonkey --reconcile [--dry-run]`) or on a schedule
(`CONSENT_SYNC_RECONCILE_HOURS`, a worker started without `--once`).

MailChimp. The whole list is read a page at a time (`GET /lists/{id}/members`, 1,000 a
page); each page's addresses are judged by the gate (`decide_batch`, each decision stored)
and what the answers ask for is made through the outbox, like every other call:
- a member of ours the gate denies, subscribed or pending: unsubscribed;
- a member the gate allows whom MailChimp shows unsubscribed, and our own unsubscribe did
  not cause it (`outbox.unsubscribed_by_us`): the person's opt-out, recorded (the gate then
  denies them); never subscribed again;
- an address that is no subject of ours: reported and left alone, unless
  `unknown="unsubscribe"` (the one exception to "the list equals the audience").
Then the gate's audience is walked in chunks (`audiences.chunk`, each member handed out a
stored decision): an allowed subject with no member on the list (deleted by hand), or one
archived or unsubscribed by us, is subscribed. Between the two walks only the subscriber
hashes seen are kept, as 128-bit integers (about 7 MB for 100,000 members). A dry run
makes no call and keeps nothing (its steps are rolled back). Logs name a member by the
keyed hash, never the address or MailChimp's hash.

SurveyMonkey. The contact list is judged whole on every pass already (`prune_list`); a
reconciliation runs that pass and reports it in the same shape. Contacts are never added
there, and an address that is no subject of ours is deleted, as the gate denies it."""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.core.crypto import email_hash
from app.integrations.mailchimp import subscriber_hash
from app.integrations.mailchimp_calls import Done
from app.integrations.runner import in_rollback, in_transaction
from app.models.audience import AudienceMember, GateResult
from app.models.decision import BatchDecisionItem
from app.services.audit import entries as audit
from app.services.gate import audiences, decisions
from app.services.optouts import records as optouts
from app.services.sync import outbox, state
from app.services.sync.outbox import Intent

log = logging.getLogger("consent_api.sync")
UNKNOWN = ("report", "unsubscribe")
KEPT = {"subscribed", "pending", "cleaned"}  # an allowed member so is left as it is
REMOVABLE = {"subscribed", "pending"}  # a denied member so is unsubscribed
OPTOUT_REASON = "unsubscribed in MailChimp by their own action (found by reconciliation)"


@dataclass
class Counts:
    """What a reconciliation found and did (or would do, in a dry run)."""

    members: int = 0  # read from the list
    in_sync: int = 0
    unsubscribed: int = 0  # denied by the gate: taken off
    subscribed: int = 0  # allowed and missing (or removed): added
    opted_out: int = 0  # unsubscribed by their own action: recorded as their opt-out
    unknown: int = 0  # no subject of ours
    unknown_unsubscribed: int = 0
    refused: int = 0  # calls refused: waiting in the outbox

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class PagePlan:
    calls: list[Intent] = field(default_factory=list)
    optouts: list[str] = field(default_factory=list)  # keyed hashes


def step(dry_run: bool) -> Callable[..., Awaitable[Any]]:
    """How a step's transaction ends: committed, or rolled back in a dry run."""
    return in_rollback if dry_run else in_transaction


def _when(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


class MailchimpReconcile:
    def __init__(self, sync: Any, *, dry_run: bool = False, unknown: str = "report") -> None:
        if unknown not in UNKNOWN:
            raise ValueError(f"unknown must be one of {UNKNOWN}")
        self.sync, self.dry_run, self.unknown = sync, dry_run, unknown
        self.counts = Counts()
        self.seen: set[int] = set()
        self.recorded: set[str] = set()  # keyed hashes on this page opted out already

    async def _db(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """One step's transaction: committed, or rolled back in a dry run."""
        return await step(self.dry_run)(self.sync.maker, fn, *args, **kw)

    async def run(self) -> dict[str, Any]:
        sync = self.sync
        await in_rollback(sync.maker, audiences.check_target, sync.purpose, sync.recipient)
        sync.progress.start(f"mailchimp reconciliation of {sync.purpose}: the list")
        async for page in sync.api.all_members():
            await self._page(page)
            sync.progress.advance(len(page))
        sync.progress.finish()
        sync.progress.start(f"mailchimp reconciliation of {sync.purpose}: the audience")
        await self._audience()
        sync.progress.finish(**self.counts.as_dict())
        return await finish(sync, self.counts, dry_run=self.dry_run, unknown=self.unknown)

    # --- the list, page by page ----------------------------------------------------------
    async def _page(self, page: list[dict[str, Any]]) -> None:
        sync = self.sync
        rows = [(str(m.get("email_address") or "").strip().lower(), m) for m in page]
        items = await self._db(
            decisions.decide_batch,
            sync.principal,
            subjects=[a for a, _ in rows],
            purpose=sync.purpose,
            recipient=sync.recipient,
        )
        unsubscribed = [
            (subscriber_hash(a), _when(m.get("last_changed")))
            for a, m in rows
            if m.get("status") == "unsubscribed"
        ]
        ours = await in_rollback(sync.maker, outbox.unsubscribed_by_us, sync.target, unsubscribed)
        # Opt-outs recorded already (by an earlier run or the webhook) are not recorded again.
        keyed = [email_hash(a) for a, m in rows if a and m.get("status") == "unsubscribed"]
        self.recorded = await in_rollback(sync.maker, optouts.opted_out, keyed, channel="email")
        plan = PagePlan()
        for (address, member), item in zip(rows, items, strict=True):
            self._classify(address, str(member.get("status") or ""), item, ours, plan)
        await self._apply(plan)

    def _classify(
        self, address: str, status: str, item: BatchDecisionItem, ours: set[str], plan: PagePlan
    ) -> None:
        h = subscriber_hash(address)
        keyed = email_hash(address) if address else None
        self.counts.members += 1
        if item.subject_id is None:
            self._unknown(h, keyed, status, plan)
        elif not item.allowed and status in REMOVABLE:
            self.counts.unsubscribed += 1
            plan.calls.append(Intent(h, "unsubscribe", item.subject_id, keyed))
        elif status == "unsubscribed" and h not in ours and keyed not in self.recorded:
            # Denied or allowed, an unsubscribe the person made (their webhook lost) is kept:
            # the gate's denial today may not outlive a consent given again tomorrow.
            self.counts.opted_out += 1  # the person's own: their opt-out, never undone
            if keyed:
                plan.optouts.append(keyed)
        elif status == "unsubscribed" and h not in ours:
            self.counts.in_sync += 1  # their opt-out, recorded already
        elif status in KEPT or not item.allowed:
            self.counts.in_sync += 1
        else:
            return  # archived, or unsubscribed by us: subscribed again by the audience walk
        self.seen.add(int(h, 16))

    def _unknown(self, h: str, keyed: str | None, status: str, plan: PagePlan) -> None:
        self.counts.unknown += 1
        if self.unknown == "unsubscribe" and status in REMOVABLE:
            self.counts.unknown_unsubscribed += 1
            plan.calls.append(Intent(h, "unsubscribe", None, keyed))
        else:
            log.info(
                "mailchimp member unknown to the service; left alone",
                extra={"email_hash": keyed, "status": status},
            )

    async def _apply(self, plan: PagePlan) -> None:
        if self.dry_run:
            return
        if plan.optouts:
            await in_transaction(self.sync.maker, self._record_optouts, plan.optouts)
        if plan.calls:
            await self._carry([(i, None) for i in plan.calls])

    async def _record_optouts(self, session: Any, keyed: list[str]) -> None:
        for h in keyed:
            await optouts.record_optout_hash(
                session,
                self.sync.principal,
                email_hash=h,
                channel="email",
                source="mailchimp",
                reason=OPTOUT_REASON,
            )

    # --- the audience, chunk by chunk -----------------------------------------------------
    async def _audience(self) -> None:
        sync = self.sync
        after: uuid.UUID | None = None
        while True:
            members, after = await self._db(
                audiences.chunk,
                sync.principal,
                purpose=sync.purpose,
                recipient=sync.recipient,
                after=after,
                scan=sync.batch * max(1, min(4, sync.settings.sync_max_connections)),
            )
            await self._subscribe(
                [
                    m
                    for m in members
                    if m.email and int(subscriber_hash(m.email), 16) not in self.seen
                ]
            )
            sync.progress.advance(len(members))
            if after is None:
                return

    async def _subscribe(self, missing: list[AudienceMember]) -> None:
        self.counts.subscribed += len(missing)
        if self.dry_run or not missing:
            return
        calls: list[tuple[Intent, GateResult | None]] = []
        for m in missing:
            assert m.email is not None
            keyed, h = email_hash(m.email), subscriber_hash(m.email)
            result = GateResult(
                subject_id=m.subject_id,
                allowed=True,
                reasons=[],
                member=m,
                email_md5=h,
                email_hash=keyed,
            )
            calls.append((Intent(h, "upsert", m.subject_id, keyed), result))
        await self._carry(calls, resubscribe=True)

    async def _carry(
        self, calls: list[tuple[Intent, GateResult | None]], *, resubscribe: bool = False
    ) -> None:
        """The existing call path: intents written, calls made, outcomes recorded."""
        sync = self.sync
        intents = [i for i, _ in calls]
        await in_transaction(sync.maker, outbox.intend, sync.target, intents, now=sync.clock())
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(sync.calls.call(i, r, resubscribe=resubscribe)) for i, r in calls
            ]
        done = Done()
        for task in tasks:
            done.add(task.result())
        await in_transaction(sync.maker, sync.calls.record, done)
        self.counts.refused += sum(o.state != "done" for o in done.outcomes)


# --- both targets ----------------------------------------------------------------------
async def finish(sync: Any, counts: Counts, *, dry_run: bool, unknown: str) -> dict[str, Any]:
    """A real run is recorded (`sync_state`, shown by `sync status`) and audited, once."""
    summary = {"target": sync.target, "dry_run": dry_run, **counts.as_dict()}
    if not dry_run:
        await in_transaction(sync.maker, _record, sync, counts.as_dict(), unknown)
    log.info("reconciliation finished", extra=summary)
    return summary


async def _record(session: Any, sync: Any, counts: dict[str, int], unknown: str) -> None:
    await state.reconciled(session, sync.target, at=sync.clock(), summary=counts)
    await audit.record(
        session,
        sync.principal,
        "sync.reconcile",
        "sync_target",
        sync.target[:100],
        unknown_addresses=unknown,
        **counts,
    )


async def if_due(sync: Any) -> dict[str, Any] | None:
    """The schedule of a following worker: reconcile when the last reconciliation is older
    than `sync_reconcile_hours` (0: never), by the worker's clock."""
    hours = sync.settings.sync_reconcile_hours
    if hours <= 0:
        return None
    current = await in_transaction(sync.maker, state.load, sync.target)
    last = current.reconciled_at
    if last is not None and sync.clock() - last < timedelta(hours=hours):
        return None
    result: dict[str, Any] = await sync.reconcile()
    return result


def describe(summary: dict[str, Any]) -> str:
    """The operator's line: what changed, or would change in a dry run."""
    would = "would " if summary["dry_run"] else ""
    head = "dry run, nothing changed" if summary["dry_run"] else "reconciled"
    return (
        f"{summary['target']}: {head}: {summary['members']} members read,"
        f" {summary['in_sync']} in sync; {would}unsubscribe {summary['unsubscribed']}"
        f" the gate denies; {would}subscribe {summary['subscribed']} missing;"
        f" {would}record {summary['opted_out']} opt-out(s) of people who unsubscribed"
        f" themselves (never subscribed again); {summary['unknown']} unknown to the service"
        f" ({would}unsubscribe {summary['unknown_unsubscribed']}, the rest left alone);"
        f" {summary['refused']} refused (waiting in the outbox)"
    )
