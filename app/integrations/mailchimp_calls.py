"""The MailChimp calls for subjects the gate has just judged, through the outbox: each call
is written as an intent, made, and its outcome recorded. What the gate's answer asks for:
erased -> delete-permanent; allowed -> upsert (or move the old member to the new
address); denied -> unsubscribe. The worker never decides on its own."""

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from app.integrations.mailchimp import MailchimpApi, subscriber_hash
from app.integrations.outcomes import judge
from app.integrations.runner import in_transaction
from app.models.audience import GateResult
from app.services.sync import outbox, state
from app.services.sync.outbox import Intent, Outcome

FALLBACK = {"upsert": "subscribed", "unsubscribe": "unsubscribed"}


@dataclass
class Done:
    """What a set of calls did: members now held, members gone, every call's outcome."""

    pushed: list[state.Held] = field(default_factory=list)
    removed: list[uuid.UUID] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, other: "Done") -> None:
        self.pushed += other.pushed
        self.removed += other.removed
        self.outcomes += other.outcomes


def plan(result: GateResult, held: str | None, objecting: bool) -> list[Intent]:
    """The calls the gate's answer for one subject asks for."""
    sid, keyed = result.subject_id, result.email_hash
    if "subject_erased" in result.reasons:
        # Erased: the keyed hash went with the address; the id (a tombstone) remains.
        return [Intent(held, "delete_permanent", sid)] if held else []
    if result.allowed and result.member is not None:
        new_hash = subscriber_hash(result.member.email or "")
        moved = [Intent(held, "change_address", sid, keyed)] if held and held != new_hash else []
        return [*moved, Intent(new_hash, "upsert", sid, keyed)]
    targets = {h for h in (held, result.email_md5 if objecting else None) if h}
    return [Intent(h, "unsubscribe", sid, keyed) for h in sorted(targets)]


class MailchimpCalls:
    """Carries out the gate's answers against one list, recording every call."""

    def __init__(
        self, api: MailchimpApi, maker: object, target: str, clock: Callable[[], datetime]
    ) -> None:
        self.api, self.maker, self.target, self.clock = api, maker, target, clock

    async def carry_out(
        self,
        results: list[GateResult],
        held: dict[uuid.UUID, str],
        objecting: set[uuid.UUID | None],
    ) -> Done:
        """Intents first (one transaction), then each subject's calls concurrently. The
        outcomes are returned for the caller to record with its position."""
        plans = [
            (r, plan(r, held.get(r.subject_id), r.subject_id in objecting))
            for r in results
            if r.subject_id is not None
        ]
        intents = [i for _, p in plans for i in p]
        await in_transaction(self.maker, outbox.intend, self.target, intents, now=self.clock())
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._subject(r, p)) for r, p in plans if p]
        done = Done()
        for task in tasks:
            done.add(task.result())
        return done

    async def _subject(self, result: GateResult, intents: list[Intent]) -> Done:
        if intents[0].action == "change_address":
            assert result.member is not None
            answer = await self.api.change_address(intents[0].remote_id, result.member)
            moved = judge(intents[0], answer, target=self.target)
            if moved.state == "done":  # the member moved: the upsert's work is done too
                upserted = Outcome(intents[1].remote_id, "done", answer.status)
                return Done(
                    [(intents[1].subject_id, intents[1].remote_id, "subscribed")],  # type: ignore[list-item]
                    [],
                    [moved, upserted],
                )
            rest = await self._subject(result, intents[1:])
            rest.outcomes.insert(0, moved)
            return rest
        done = Done()
        for intent in intents:
            done.add(await self.call(intent, result))
        return done

    async def call(
        self, intent: Intent, result: GateResult | None = None, *, resubscribe: bool = False
    ) -> Done:
        """One call and its outcome; what the list holds afterwards. `resubscribe`: see
        `MailchimpApi.upsert` (reconciliation; a retry is the plain upsert)."""
        sid = intent.subject_id
        if intent.action == "upsert":
            assert result is not None and result.member is not None
            answer = await self.api.upsert(result.member, resubscribe=resubscribe)
        elif intent.action == "unsubscribe":
            answer = await self.api.unsubscribe(intent.remote_id)
        else:
            answer = await self.api.delete_permanent(intent.remote_id)
        outcome = judge(intent, answer, target=self.target)
        if outcome.state != "done" or sid is None:
            return Done(outcomes=[outcome])
        if intent.action == "delete_permanent":
            return Done(removed=[sid], outcomes=[outcome])
        if intent.action == "unsubscribe" and answer.status == 404:
            return Done(outcomes=[outcome])
        body = answer.body if isinstance(answer.body, dict) else {}
        status = str(body.get("status") or FALLBACK[intent.action])
        return Done(pushed=[(sid, intent.remote_id, status)], outcomes=[outcome])

    async def record(self, session: object, done: Done, **position: object) -> None:
        """Outcomes, what the list holds and the position, in one transaction."""
        await outbox.record(session, self.target, done.outcomes, now=self.clock())  # type: ignore[arg-type]
        await state.record_batch(
            session,  # type: ignore[arg-type]
            self.target,
            pushed=done.pushed,
            removed=done.removed,
            **position,
        )
