"""What a remote call's answer means for the outbox. A call that takes someone off a list
is done on a 2xx or a 404 (nothing left to remove) and otherwise tried again, whatever the
4xx; a call that adds someone is given up when the answer says it never will succeed.
401 and 403 never get here: the client raises `RemoteRefused` and the run stops."""

import logging
from datetime import datetime

from app.integrations.http import Answer
from app.models.sync import REMOVING
from app.services.sync.outbox import Intent, Outcome

log = logging.getLogger("consent_api.sync")
# MailChimp's titles for an addition that no retry will make succeed: the person
# unsubscribed themselves, the address bounced, or it was permanently deleted.
NEVER = {
    "Member In Compliance State": "the member is in a compliance state in MailChimp"
    " (unsubscribed by their own action, or cleaned): only they can subscribe again",
    "Forgotten Email Not Subscribed": "the address was permanently deleted from MailChimp"
    " and cannot be added again",
}


def title_of(answer: Answer) -> str | None:
    body = answer.body
    if not isinstance(body, dict):
        return None
    title = body.get("title") or (body.get("error") or {}).get("name")
    return str(title)[:100] if title else None


def _changed_at(answer: Answer) -> datetime | None:
    value = answer.body.get("last_changed") if isinstance(answer.body, dict) else None
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def judge(intent: Intent, answer: Answer, *, target: str) -> Outcome:
    """The outcome of one call; a refusal is logged by the keyed hash, never the address
    (MailChimp's `detail` may quote it, and its subscriber hash is an unsalted MD5)."""
    removes = intent.action in REMOVING
    if answer.ok or (removes and answer.status == 404):
        return Outcome(intent.remote_id, "done", answer.status, None, None, _changed_at(answer))
    title = title_of(answer)
    given_up = None if removes else NEVER.get(title or "")
    log.warning(
        f"{target.partition(':')[0]} refused a call; "
        + ("given up" if given_up else "tried again later"),
        extra={
            "action": intent.action.replace("_", "-"),
            "status": answer.status,
            "title": title,
            "subject_id": str(intent.subject_id) if intent.subject_id else None,
            "email_hash": intent.email_hash,
        },
    )
    state = "given_up" if given_up else "pending"
    return Outcome(intent.remote_id, state, answer.status, title, given_up)
