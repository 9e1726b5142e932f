"""The SurveyMonkey side of sync (API v3). We never add contacts there; we keep the survey
contact list to what the gate allows, and the gate is the only rule: a contact SurveyMonkey
has as `optout` is its person's no to the purpose the list serves, recorded here as a
withdrawal of consent (basis consent) or an objection (any other basis), so that the gate
itself denies them; contacts the gate denies are removed (DELETE /contacts/{id}: v3
documents no call that takes a contact off one list only), and erased subjects' contacts
are deleted as the change feed reports the erasure."""

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.core.config import Settings
from app.core.crypto import email_hash
from app.integrations import reconcile as reconciliation
from app.integrations.http import PoliteClient
from app.integrations.mailchimp import NotConfigured
from app.integrations.outcomes import judge
from app.integrations.progress import Progress
from app.integrations.reconcile import Counts
from app.integrations.runner import in_transaction, run_forever
from app.models.base import utcnow
from app.services.changes import feed as changes
from app.services.gate import audiences
from app.services.sync import outbox, state, surveys, system_principal
from app.services.sync.outbox import Intent, Outcome
from app.services.sync.surveys import Verdict

log = logging.getLogger("consent_api.sync")
PER_PAGE = 1000
# Feed entries after which the subject's contact goes: erased, or merged into another.
GONE = ("subject.erased", "subject.merged")


def _doomed(verdicts: list[Verdict], contacts: list[tuple[str, str]]) -> list[Intent]:
    """The contacts the gate denies, as removals (named by the keyed hash of the address)."""
    addresses = dict(contacts)
    return [
        Intent(v.contact_id, "delete_contact", v.subject_id, _keyed(addresses.get(v.contact_id)))
        for v in verdicts
        if not v.keep
    ]


def _count(counts: Counts, verdicts: list[Verdict]) -> None:
    """A page of contacts in reconciliation's shape: removed contacts are `unsubscribed`
    (an unknown address is removed too); nobody is ever added here."""
    for v in verdicts:
        counts.members += 1
        if v.keep:
            counts.in_sync += 1
        elif v.subject_id is None:
            counts.unknown += 1
            counts.unknown_unsubscribed += 1
        else:
            counts.unsubscribed += 1


def _keyed(address: str | None) -> str | None:
    address = (address or "").strip().lower()
    return email_hash(address) if "@" in address else None


class SurveymonkeySync:
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
        self.clock = clock
        if not settings.surveymonkey_access_token or not settings.surveymonkey_contact_list_id:
            raise NotConfigured(
                "set CONSENT_SURVEYMONKEY_ACCESS_TOKEN and CONSENT_SURVEYMONKEY_CONTACT_LIST_ID"
                " to sync SurveyMonkey"
            )
        self.settings, self.maker = settings, maker
        self.list_id = settings.surveymonkey_contact_list_id
        self.purpose = purpose or settings.surveymonkey_purpose
        self.recipient = settings.surveymonkey_recipient
        self.target = f"surveymonkey:{self.list_id}:{self.purpose}"
        self.principal = system_principal(f"sync-worker:{self.target}")
        self.progress = progress or Progress()
        self.pushed = 0  # never: we only remove
        self.http = PoliteClient(
            settings.surveymonkey_base_url,
            headers={
                "Authorization": f"Bearer {settings.surveymonkey_access_token.get_secret_value()}"
            },
            max_connections=settings.sync_max_connections,
            max_attempts=settings.sync_max_attempts,
            backoff=settings.sync_backoff_seconds,
            **client_kw,
        )

    async def run_once(self, *, eager: bool = True) -> None:
        await in_transaction(self.maker, audiences.check_target, self.purpose, self.recipient)
        due = await in_transaction(
            self.maker, outbox.due, self.target, now=self.clock(), removals_at_once=eager
        )
        await self._delete(due)  # removals refused before: every one until it is done
        await self.take_optouts()
        await self.follow_feed()
        await self.prune_list()

    async def run_forever(self) -> None:
        await run_forever(self.following_pass, self.settings)

    async def following_pass(self) -> None:
        """A pass of a worker that keeps following, and the reconciliation when it is due."""
        await self.run_once(eager=False)
        await reconciliation.if_due(self)

    async def reconcile(self, *, dry_run: bool = False, unknown: str = "report") -> dict[str, Any]:
        """The contact list judged whole (`prune_list`), reported in the shape MailChimp's
        reconciliation has. `unknown` has no say here: an address that is no subject of
        ours is denied by the gate and deleted, as on every pass."""
        counts = await self.prune_list(dry_run=dry_run)
        return await reconciliation.finish(self, counts, dry_run=dry_run, unknown="unsubscribe")

    async def _pages(self, path: str, **params: Any) -> Any:
        page = 1
        while True:
            answer = await self.http.call(
                "GET", path, params={**params, "page": page, "per_page": PER_PAGE}
            )
            if not answer.ok:
                raise RuntimeError(f"SurveyMonkey refused {path}: HTTP {answer.status}")
            data = answer.body.get("data", [])
            if data:
                yield data
            if not answer.body.get("links", {}).get("next") or not data:
                return
            page += 1

    async def take_optouts(self) -> None:
        """Each SurveyMonkey opt-out recorded once as its person's no to the purpose (see
        `surveys.take_optouts`); then the contacts of our subjects the gate now denies are
        removed. An address that is no subject of ours is left to the controller."""
        self.progress.start("surveymonkey opt-outs")
        doomed: list[Intent] = []
        async for data in self._pages("/contacts", status="optout"):
            contacts = [(str(c["id"]), str(c.get("email", ""))) for c in data]
            taken = await in_transaction(
                self.maker,
                surveys.take_optouts,
                self.principal,
                contacts,
                purpose=self.purpose,
                recipient=self.recipient,
            )
            doomed += _doomed(taken.verdicts, contacts)
            self.progress.advance(
                len(data),
                withdrawn=taken.withdrawn,
                objected=taken.objected,
                unknown=taken.unknown,
            )
        await self._delete(doomed)
        self.progress.finish(removed=len(doomed))

    async def prune_list(self, *, dry_run: bool = False) -> Counts:
        """Judge every contact of the list; remove those the gate would not allow. A dry
        run (reconciliation) removes nothing and keeps nothing it judged."""
        self.progress.start("surveymonkey contact list")
        counts = Counts()
        doomed: list[Intent] = []
        async for data in self._pages(f"/contact_lists/{self.list_id}/contacts"):
            contacts = [(str(c["id"]), str(c.get("email", ""))) for c in data]
            verdicts = await reconciliation.step(dry_run)(
                self.maker,
                surveys.judge_contacts,
                self.principal,
                contacts,
                purpose=self.purpose,
                recipient=self.recipient,
            )
            kept = [
                (v.subject_id, v.contact_id, "active") for v in verdicts if v.keep and v.subject_id
            ]
            if not dry_run:
                await in_transaction(self.maker, state.remember, self.target, kept)
            doomed += _doomed(verdicts, contacts)
            _count(counts, verdicts)
            self.progress.advance(len(data))
        counts.refused = 0 if dry_run else await self._delete(doomed)
        self.progress.finish(removed=len(doomed))
        return counts

    async def _delete(self, doomed: list[Intent]) -> int:
        """Each removal written to the outbox, made, and its outcome recorded: one refused
        stays waiting and is made again on every pass until it is done. How many were
        refused."""
        if not doomed:
            return 0
        await in_transaction(self.maker, outbox.intend, self.target, doomed, now=self.clock())

        async def one(intent: Intent) -> Outcome:
            answer = await self.http.call("DELETE", f"/contacts/{intent.remote_id}")
            return judge(intent, answer, target=self.target)

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i)) for i in doomed]
        outcomes = [t.result() for t in tasks]
        await in_transaction(self.maker, self._record, outcomes)
        return sum(o.state != "done" for o in outcomes)

    async def _record(self, session: Any, outcomes: list[Outcome]) -> None:
        await outbox.record(session, self.target, outcomes, now=self.clock())
        gone = [o.remote_id for o in outcomes if o.state == "done"]
        await state.forget_remote(session, self.target, gone)

    async def follow_feed(self) -> None:
        """Erasures and merges reach SurveyMonkey: the subject's contact is deleted."""
        batch = max(1, self.settings.sync_batch_size)
        while True:
            current = await in_transaction(self.maker, state.load, self.target)
            page = await in_transaction(
                self.maker, changes.read, after=current.feed_after, limit=batch
            )
            if not page.items:
                return
            # Erased, or merged into another subject (the same person: it leaves every copy).
            erased = [c.subject_id for c in page.items if c.kind in GONE and c.subject_id]
            held = await in_transaction(self.maker, state.members, self.target, erased)
            await self._delete([Intent(cid, "delete_contact", sid) for sid, cid in held.items()])
            await in_transaction(
                self.maker, state.record_batch, self.target, feed_after=page.next_after
            )

    async def aclose(self) -> None:
        await self.http.aclose()
