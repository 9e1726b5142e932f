"""The SurveyMonkey side of sync (API v3). We never add contacts there; we keep the survey
contact list to what the gate allows, and the gate is the only rule: a contact SurveyMonkey
has as `optout` is its person's no to the purpose the list serves, recorded here as a
withdrawal of consent (basis consent) or an objection (any other basis), so that the gate
itself denies them; contacts the gate denies are removed (DELETE /contacts/{id}: v3
documents no call that takes a contact off one list only), and erased subjects' contacts
are deleted as the change feed reports the erasure."""

import asyncio
import logging
from typing import Any

from app.core.config import Settings
from app.integrations.http import PoliteClient
from app.integrations.mailchimp import NotConfigured
from app.integrations.progress import Progress
from app.integrations.runner import in_transaction, run_forever
from app.services.changes import feed as changes
from app.services.gate import audiences
from app.services.sync import state, surveys, system_principal

log = logging.getLogger("consent_api.sync")
PER_PAGE = 1000


class SurveymonkeySync:
    def __init__(
        self,
        settings: Settings,
        maker: Any,
        *,
        purpose: str | None = None,
        progress: Progress | None = None,
        **client_kw: Any,
    ) -> None:
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

    async def run_once(self) -> None:
        await in_transaction(self.maker, audiences.check_target, self.purpose, self.recipient)
        await self.take_optouts()
        await self.follow_feed()
        await self.prune_list()

    async def run_forever(self) -> None:
        await run_forever(self.run_once, self.settings)

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
        doomed: list[str] = []
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
            doomed += [v.contact_id for v in taken.verdicts if not v.keep]
            self.progress.advance(
                len(data),
                withdrawn=taken.withdrawn,
                objected=taken.objected,
                unknown=taken.unknown,
            )
        await self._delete(doomed)
        self.progress.finish(removed=len(doomed))

    async def prune_list(self) -> None:
        """Judge every contact of the list; remove those the gate would not allow."""
        self.progress.start("surveymonkey contact list")
        doomed: list[str] = []
        async for data in self._pages(f"/contact_lists/{self.list_id}/contacts"):
            contacts = [(str(c["id"]), str(c.get("email", ""))) for c in data]
            verdicts = await in_transaction(
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
            await in_transaction(self.maker, state.remember, self.target, kept)
            doomed += [v.contact_id for v in verdicts if not v.keep]
            self.progress.advance(len(data))
        await self._delete(doomed)
        self.progress.finish(removed=len(doomed))

    async def _delete(self, contact_ids: list[str]) -> None:
        async def one(cid: str) -> str | None:
            answer = await self.http.call("DELETE", f"/contacts/{cid}")
            if answer.ok or answer.status == 404:
                return cid
            log.warning(
                "surveymonkey refused a call; skipped",
                extra={"action": "delete contact", "status": answer.status, "contact_id": cid},
            )
            return None

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(cid)) for cid in contact_ids]
        done = [t.result() for t in tasks]
        await in_transaction(self.maker, state.forget_remote, self.target, [c for c in done if c])

    async def follow_feed(self) -> None:
        """Erasures reach SurveyMonkey: the erased subject's contact is deleted."""
        batch = max(1, self.settings.sync_batch_size)
        while True:
            current = await in_transaction(self.maker, state.load, self.target)
            page = await in_transaction(
                self.maker, changes.read, after=current.feed_after, limit=batch
            )
            if not page.items:
                return
            erased = [
                c.subject_id for c in page.items if c.kind == "subject.erased" and c.subject_id
            ]
            held = await in_transaction(self.maker, state.members, self.target, erased)
            await self._delete(list(held.values()))
            await in_transaction(
                self.maker, state.record_batch, self.target, feed_after=page.next_after
            )

    async def aclose(self) -> None:
        await self.http.aclose()
