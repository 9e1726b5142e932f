"""The MailChimp side of sync. First sync: the gate's audience, 500 members a batch call.
Afterwards the change feed: each batch of entries is judged by the gate at the moment of
the push (an erased, restricted, objected or opted-out subject is never upserted), then
pushed, then the position advances. Unsubscribed and cleaned members are read back.
Resumable: a crash repeats at most the batch it interrupted."""

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.core.config import Settings
from app.core.crypto import email_hash
from app.core.errors import Unprocessable
from app.integrations import reconcile as reconciliation
from app.integrations.http import Answer
from app.integrations.mailchimp import BATCH_LIMIT, MailchimpApi, subscriber_hash
from app.integrations.mailchimp_calls import Done, MailchimpCalls
from app.integrations.outcomes import judge
from app.integrations.progress import Progress
from app.integrations.runner import in_transaction, run_forever
from app.models.audience import AudienceMember
from app.models.base import utcnow
from app.models.change import ChangePublic
from app.models.sync import REMOVING
from app.services.changes import feed as changes
from app.services.gate import audiences
from app.services.sync import mailchimp_events, outbox, state, system_principal
from app.services.sync.outbox import Intent

log = logging.getLogger("consent_api.sync")
STARTED = uuid.UUID(int=0)  # first sync begun, nothing pushed yet (every id sorts after it)
# Entries after which a denied subject is unsubscribed even if we never pushed it.
OBJECTING = {
    "optout",
    "consent.withdrawn",
    "objection",
    "subject.restricted",
    "subject.erased_in_part",
    "basis.ended",
}


def _batch_refusal(error: dict[str, Any]) -> Answer:
    """A batch call's per-member error, as the answer a single call would have given."""
    text = str(error.get("error") or "")
    if "compliance state" in text:
        title = "Member In Compliance State"
    elif "permanently deleted" in text:
        title = "Forgotten Email Not Subscribed"
    else:
        title = str(error.get("error_code") or "Invalid Resource")
    return Answer(400, {"title": title})


def _when(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


class MailchimpSync:
    def __init__(
        self,
        settings: Settings,
        maker: Any,
        *,
        purpose: str | None = None,
        progress: Progress | None = None,
        clock: Callable[[], datetime] = utcnow,
        **client_kw: Any,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.maker = maker
        self.api = MailchimpApi(settings, **client_kw)
        self.purpose = purpose or settings.mailchimp_purpose
        self.recipient = settings.mailchimp_recipient
        self.target = f"mailchimp:{self.api.list_id}:{self.purpose}"
        self.principal = system_principal(f"sync-worker:{self.target}")
        self.batch = max(1, min(settings.sync_batch_size, BATCH_LIMIT))
        self.progress = progress or Progress()
        self.pushed = 0
        self.calls = MailchimpCalls(self.api, maker, self.target, clock)

    async def run_once(self, *, eager: bool = True) -> None:
        """One pass. `eager` (a single run, `--once`) tries every waiting removal now, not
        only those whose back-off has passed."""
        await in_transaction(self.maker, audiences.check_target, self.purpose, self.recipient)
        current = await in_transaction(self.maker, state.load, self.target)
        await self.retry_due(eager=eager)
        if not current.initial_done:
            await self.first_sync(current.audience_after)
        await self.follow_feed()
        await self.read_back()

    async def run_forever(self) -> None:
        await run_forever(self.following_pass, self.settings)

    async def following_pass(self) -> None:
        """A pass of a worker that keeps following, and the reconciliation when it is due."""
        await self.run_once(eager=False)
        await reconciliation.if_due(self)

    async def reconcile(self, *, dry_run: bool = False, unknown: str = "report") -> dict[str, Any]:
        """Make the whole list equal to the gate's audience (`MailchimpReconcile`)."""
        return await reconciliation.MailchimpReconcile(self, dry_run=dry_run, unknown=unknown).run()

    # --- the outbox: calls refused before, tried again ----------------------------------
    async def retry_due(self, *, eager: bool) -> None:
        """Waiting removals are made again as they are; a waiting addition is judged by the
        gate again and carried out as the gate answers now."""
        due = await in_transaction(
            self.maker, outbox.due, self.target, now=self.clock(), removals_at_once=eager
        )
        removals = [i for i in due if i.action in REMOVING]
        done = Done()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.calls.call(i)) for i in removals]
        for task in tasks:
            done.add(task.result())
        await in_transaction(self.maker, self.calls.record, done)
        additions = [i for i in due if i.action not in REMOVING]
        if additions:
            await self._judge_again(additions)

    async def _judge_again(self, additions: list[Intent]) -> None:
        await in_transaction(
            self.maker, outbox.forget_additions, self.target, [i.remote_id for i in additions]
        )
        ids = list(dict.fromkeys(i.subject_id for i in additions if i.subject_id is not None))
        if ids:
            done = await self._judge_and_call(ids, set())
            await in_transaction(self.maker, self.calls.record, done)

    # --- MailChimp -> gate -------------------------------------------------------------
    async def read_back(self) -> None:
        """Unsubscribed and cleaned members become opt-outs and cleaned records."""
        current = await in_transaction(self.maker, state.load, self.target)
        started = utcnow()
        for status, kind in (("unsubscribed", "unsubscribe"), ("cleaned", "cleaned")):
            async for page in self.api.members_changed(status, current.readback_since):
                await in_transaction(self.maker, self._import, page, kind)
        await in_transaction(self.maker, state.save, self.target, readback_since=started)

    async def _import(self, session: Any, page: list[dict[str, Any]], kind: str) -> None:
        if kind == "unsubscribe":
            page = await self._not_ours(session, page)
        for member in page:
            form = {
                "type": kind,
                "fired_at": str(member.get("last_changed") or ""),
                "data[email]": str(member.get("email_address") or ""),
                "data[list_id]": self.api.list_id,
                "data[reason]": "read back by the sync worker",
            }
            try:
                await mailchimp_events.handle(session, form)
            except Unprocessable as exc:  # checked before anything is written
                # Not an address (or text) the service accepts, so no subject of ours: skipped.
                log.warning(
                    "mailchimp member not read back; skipped",
                    extra={"kind": kind, "field": exc.extra.get("field")},
                )

    async def _not_ours(self, session: Any, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Unsubscribed members, less those whose status our own unsubscribe set (done, and
        MailChimp has changed nothing since its answer): the rest are the people's own."""
        keyed = [(subscriber_hash(str(m.get("email_address") or "")), m) for m in page]
        ours = await outbox.unsubscribed_by_us(
            session,
            self.target,
            [(h, _when(m.get("last_changed"))) for h, m in keyed],
        )
        return [m for h, m in keyed if h not in ours]

    # --- gate -> MailChimp: first sync ---------------------------------------------------
    async def first_sync(self, after: uuid.UUID | None) -> None:
        if after is None:
            # Changes from here on are replayed after the first sync: nothing falls between.
            head = await in_transaction(self.maker, changes.head)
            await in_transaction(
                self.maker, state.save, self.target, feed_after=head, audience_after=STARTED
            )
            after = STARTED
        self.progress.start(f"mailchimp first sync of {self.purpose}")
        # The next chunk is read (and its decisions stored) while this one is pushed; the
        # position still advances chunk by chunk, after each one's calls succeeded.
        ahead = asyncio.create_task(self._read_chunk(after))
        try:
            while True:
                members, next_after = await ahead
                if next_after is not None:
                    ahead = asyncio.create_task(self._read_chunk(next_after))
                pushed = await self._push_batches(members)
                done = next_after is None
                await in_transaction(
                    self.maker,
                    state.record_batch,
                    self.target,
                    pushed=pushed,
                    audience_after=next_after,
                    initial_done=True if done else None,
                    clear_audience=done,
                )
                self.pushed += len(pushed)
                self.progress.advance(len(pushed))
                if done:
                    break
        finally:
            ahead.cancel()
        self.progress.finish(pushed=self.pushed)

    async def _read_chunk(
        self, after: uuid.UUID | None
    ) -> tuple[list[AudienceMember], uuid.UUID | None]:
        return await in_transaction(
            self.maker,
            audiences.chunk,
            self.principal,
            purpose=self.purpose,
            recipient=self.recipient,
            after=None if after == STARTED else after,
            scan=self.batch * max(1, min(4, self.settings.sync_max_connections)),
        )

    async def _push_batches(self, members: list[AudienceMember]) -> list[state.Held]:
        by_email = {m.email: m.subject_id for m in members if m.email}
        parts = [members[i : i + self.batch] for i in range(0, len(members), self.batch)]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.api.batch_subscribe(p)) for p in parts]
        pushed: list[state.Held] = []
        for task in tasks:
            answer = task.result()
            if not answer.ok:  # the call itself, not a member: the list id is wrong
                title = answer.body.get("title") if isinstance(answer.body, dict) else None
                raise RuntimeError(
                    f"MailChimp refused the batch call: HTTP {answer.status} {title}"
                )
            await self._batch_errors(answer.body.get("errors", []), by_email)
            for m in answer.body.get("new_members", []) + answer.body.get("updated_members", []):
                sid = by_email.get(str(m.get("email_address", "")).lower())
                if sid is not None:
                    pushed.append((sid, m["id"], m.get("status", "subscribed")))
        return pushed

    async def _batch_errors(
        self, errors: list[dict[str, Any]], by_email: dict[str, uuid.UUID]
    ) -> None:
        """Members a batch call refused, into the outbox like any refused addition."""
        judged = []
        for error in errors:
            address = str(error.get("email_address") or "").strip().lower()
            if address not in by_email:
                continue
            intent = Intent(
                subscriber_hash(address), "upsert", by_email[address], email_hash(address)
            )
            judged.append((intent, judge(intent, _batch_refusal(error), target=self.target)))
        if judged:
            await in_transaction(self.maker, self._record_refused, judged)

    async def _record_refused(self, session: Any, judged: list[tuple[Intent, Any]]) -> None:
        now = self.clock()
        await outbox.intend(session, self.target, [i for i, _ in judged], now=now)
        await outbox.record(session, self.target, [o for _, o in judged], now=now)

    # --- gate -> MailChimp: the change feed ----------------------------------------------
    def _relevant(self, change: ChangePublic) -> bool:
        return change.subject_id is not None and change.purpose in (
            None,
            self.purpose,
            "international_transfer",
        )

    async def follow_feed(self) -> None:
        """The feed, batch by batch: the position advances once the batch's calls are in
        the outbox with their outcomes, refused or not (the outbox tries them again)."""
        self.progress.start(f"mailchimp changes for {self.purpose}")
        while True:
            current = await in_transaction(self.maker, state.load, self.target)
            page = await in_transaction(
                self.maker, changes.read, after=current.feed_after, limit=self.batch
            )
            if not page.items:
                break
            done = await self._apply(page.items)
            await in_transaction(self.maker, self.calls.record, done, feed_after=page.next_after)
            self.progress.advance(len(page.items))
        self.progress.finish()

    async def _apply(self, entries: list[ChangePublic]) -> Done:
        relevant = [c for c in entries if self._relevant(c)]
        ids = list(dict.fromkeys(c.subject_id for c in relevant if c.subject_id is not None))
        if not ids:
            return Done()
        objecting = {c.subject_id for c in relevant if c.kind in OBJECTING}
        return await self._judge_and_call(ids, objecting)

    async def _judge_and_call(self, ids: list[uuid.UUID], objecting: set[uuid.UUID | None]) -> Done:
        held = await in_transaction(self.maker, state.members, self.target, ids)
        # The gate at the moment of the push, each decision stored before anything leaves.
        results = await in_transaction(
            self.maker,
            audiences.gate_subjects,
            self.principal,
            ids=ids,
            purpose=self.purpose,
            recipient=self.recipient,
        )
        return await self.calls.carry_out(results, held, objecting)

    async def aclose(self) -> None:
        await self.api.aclose()
