"""The MailChimp side of sync. First sync: the gate's audience, 500 members a batch call.
Afterwards the change feed: each batch of entries is judged by the gate at the moment of
the push (an erased, restricted, objected or opted-out subject is never upserted), then
pushed, then the position advances. Unsubscribed and cleaned members are read back.
Resumable: a crash repeats at most the batch it interrupted."""

import asyncio
import logging
import uuid
from typing import Any

from app.core.config import Settings
from app.core.crypto import email_hash
from app.core.errors import Unprocessable
from app.integrations.http import Answer
from app.integrations.mailchimp import BATCH_LIMIT, MailchimpApi, subscriber_hash
from app.integrations.progress import Progress
from app.integrations.runner import in_transaction, run_forever
from app.models.audience import AudienceMember, GateResult
from app.models.base import utcnow
from app.models.change import ChangePublic
from app.services.changes import feed as changes
from app.services.gate import audiences
from app.services.sync import mailchimp_events, state, system_principal

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


def _refused(
    answer: Answer, action: str, *, subject_id: uuid.UUID | None, keyed_hash: str | None
) -> None:
    # MailChimp's `detail` may quote the address: only its status and title are logged. The
    # subject is named by its id and the service's keyed hash of the address (HMAC under
    # CONSENT_SECRET_KEY), never by MailChimp's subscriber hash: that is an unsalted MD5 of
    # the address, which anyone holding a list of addresses can match.
    title = answer.body.get("title") if isinstance(answer.body, dict) else None
    log.warning(
        "mailchimp refused a call; skipped",
        extra={
            "action": action,
            "status": answer.status,
            "title": title,
            "subject_id": str(subject_id) if subject_id else None,
            "email_hash": keyed_hash,
        },
    )


def _unsubscribe_intents(
    results: list[GateResult], held: dict[uuid.UUID, str], objecting: set[uuid.UUID | None]
) -> list[state.Held]:
    """The unsubscribes a batch is about to make: each denied, unerased subject's member
    held there (or, after an objecting entry, the member its address would be)."""
    return [
        (r.subject_id, member_hash, "unsubscribed")
        for r in results
        if r.subject_id is not None and not r.allowed and "subject_erased" not in r.reasons
        for member_hash in [
            held.get(r.subject_id) or (r.email_md5 if r.subject_id in objecting else None)
        ]
        if member_hash
    ]


class MailchimpSync:
    def __init__(
        self,
        settings: Settings,
        maker: Any,
        *,
        purpose: str | None = None,
        progress: Progress | None = None,
        **client_kw: Any,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.api = MailchimpApi(settings, **client_kw)
        self.purpose = purpose or settings.mailchimp_purpose
        self.recipient = settings.mailchimp_recipient
        self.target = f"mailchimp:{self.api.list_id}:{self.purpose}"
        self.principal = system_principal(f"sync-worker:{self.target}")
        self.batch = max(1, min(settings.sync_batch_size, BATCH_LIMIT))
        self.progress = progress or Progress()
        self.pushed = 0

    async def run_once(self) -> None:
        await in_transaction(self.maker, audiences.check_target, self.purpose, self.recipient)
        current = await in_transaction(self.maker, state.load, self.target)
        if not current.initial_done:
            await self.first_sync(current.audience_after)
        await self.follow_feed()
        await self.read_back()

    async def run_forever(self) -> None:
        await run_forever(self.run_once, self.settings)

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
            for error in answer.body.get("errors", []):
                address = str(error.get("email_address") or "").strip().lower()
                _refused(
                    Answer(400, {"title": error.get("error_code")}),
                    "batch member",
                    subject_id=by_email.get(address),
                    keyed_hash=email_hash(address) if address else None,
                )
            for m in answer.body.get("new_members", []) + answer.body.get("updated_members", []):
                sid = by_email.get(str(m.get("email_address", "")).lower())
                if sid is not None:
                    pushed.append((sid, m["id"], m.get("status", "subscribed")))
        return pushed

    # --- gate -> MailChimp: the change feed ----------------------------------------------
    def _relevant(self, change: ChangePublic) -> bool:
        return change.subject_id is not None and change.purpose in (
            None,
            self.purpose,
            "international_transfer",
        )

    async def follow_feed(self) -> None:
        self.progress.start(f"mailchimp changes for {self.purpose}")
        while True:
            current = await in_transaction(self.maker, state.load, self.target)
            page = await in_transaction(
                self.maker, changes.read, after=current.feed_after, limit=self.batch
            )
            if not page.items:
                break
            pushed, removed = await self._apply(page.items)
            await in_transaction(
                self.maker,
                state.record_batch,
                self.target,
                pushed=pushed,
                removed=removed,
                feed_after=page.next_after,
            )
            self.progress.advance(len(page.items))
        self.progress.finish()

    async def _apply(self, entries: list[ChangePublic]) -> tuple[list[state.Held], list[uuid.UUID]]:
        relevant = [c for c in entries if self._relevant(c)]
        ids = list(dict.fromkeys(c.subject_id for c in relevant if c.subject_id is not None))
        if not ids:
            return [], []
        objecting = {c.subject_id for c in relevant if c.kind in OBJECTING}
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
        # Written ahead: an unsubscribe MailChimp reports back (webhook or read-back) that
        # we made ourselves is then not mistaken for the person's own opt-out.
        intents = _unsubscribe_intents(results, held, objecting)
        await in_transaction(self.maker, state.remember, self.target, intents)
        return await self._push_each(results, held, objecting)

    async def _push_each(
        self,
        results: list[GateResult],
        held: dict[uuid.UUID, str],
        objecting: set[uuid.UUID | None],
    ) -> tuple[list[state.Held], list[uuid.UUID]]:
        """Each judged subject's calls, concurrently: (members pushed, members removed)."""
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._one(r, held.get(r.subject_id), r.subject_id in objecting))
                for r in results
                if r.subject_id is not None
            ]
        pushed: list[state.Held] = []
        removed: list[uuid.UUID] = []
        for task in tasks:
            outcome = task.result()
            if outcome is None:
                continue
            if outcome[1] is None:
                removed.append(outcome[0])
            else:
                pushed.append(outcome)  # type: ignore[arg-type]
        return pushed, removed

    async def _one(
        self, result: GateResult, held: str | None, objecting: bool
    ) -> tuple[uuid.UUID, str | None, str] | None:
        """One subject's calls. Returns (subject, hash held now, its status there), or
        (subject, None, "") when MailChimp no longer holds it, or None for no change."""
        sid = result.subject_id
        assert sid is not None
        if "subject_erased" in result.reasons:
            if held is None:
                return None
            answer = await self.api.delete_permanent(held)
            if not answer.ok and answer.status != 404:
                # Erased: the keyed hash went with the address; the id (a tombstone) remains.
                _refused(answer, "delete-permanent", subject_id=sid, keyed_hash=None)
                return None
            return sid, None, ""
        if result.allowed and result.member is not None:
            member = result.member
            new_hash = subscriber_hash(member.email or "")
            if held is not None and held != new_hash:
                moved = await self.api.change_address(held, member)
                if moved.ok:
                    return sid, new_hash, "subscribed"
            answer = await self.api.upsert(member)
            if not answer.ok:
                _refused(answer, "upsert", subject_id=sid, keyed_hash=result.email_hash)
                return None
            return sid, new_hash, str(answer.body.get("status", "subscribed"))
        targets = {h for h in (held, result.email_md5 if objecting else None) if h}
        done = None
        for member_hash in sorted(targets):
            answer = await self.api.unsubscribe(member_hash)
            if answer.ok:
                done = (sid, member_hash, "unsubscribed")
            elif answer.status != 404:
                _refused(answer, "unsubscribe", subject_id=sid, keyed_hash=result.email_hash)
        return done

    async def aclose(self) -> None:
        await self.api.aclose()
