"""The sync's outbox: every call to MailChimp or SurveyMonkey is written as an intent before
it is made, and its outcome after. One row per (target, remote member): the newest intent
replaces the one before it. Every function here runs inside the caller's transaction.

The asymmetry is the privacy-safe one. A call that takes someone off a list stays
`pending` until it is done (a 404 counts as done), retried with back-off on every pass; a
call that adds someone may be `given_up` when the tool answers that it never will succeed."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import Page, decode_cursor, encode_cursor
from app.models.sync import REMOVING, SyncFailurePublic

FIRST_RETRY = timedelta(minutes=1)
LAST_RETRY = timedelta(hours=6)  # the back-off doubles from a minute up to this
# A removal's answer whose `last_changed` is older than the intent by more than this did not
# change the member: their status was set before we decided (by the person, whose webhook
# was lost). Generous, because the opposite error is worse: our own unsubscribe taken for
# the person's would become an opt-out they never made. Clocks within it are trusted.
CLOCK_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class Intent:
    remote_id: str
    action: str
    subject_id: uuid.UUID | None = None
    email_hash: str | None = None


@dataclass(frozen=True)
class Outcome:
    remote_id: str
    state: str  # done | pending (tried again later) | given_up
    status: int | None = None
    title: str | None = None
    reason: str | None = None
    remote_changed_at: datetime | None = None


def backoff(attempts: int) -> timedelta:
    """The pause before try number `attempts + 1`: a minute, doubling, at most six hours."""
    return min(FIRST_RETRY * (2 ** max(0, attempts - 1)), LAST_RETRY)


INTEND = text("""
INSERT INTO sync_outbox (target, remote_id, subject_id, email_hash, action, removes, state,
                         attempts, next_try_at, created_at, updated_at)
SELECT :t, r, s, h, a, a = ANY(CAST(:removing AS text[])), 'pending', 0, :now, :now, :now
FROM unnest(CAST(:r AS text[]), CAST(:s AS uuid[]), CAST(:h AS text[]), CAST(:a AS text[]))
  AS v(r, s, h, a)
ON CONFLICT (target, remote_id) DO UPDATE SET
  subject_id = EXCLUDED.subject_id, email_hash = EXCLUDED.email_hash,
  action = EXCLUDED.action, removes = EXCLUDED.removes, state = 'pending', attempts = 0,
  last_status = NULL, last_title = NULL, given_up_reason = NULL,
  next_try_at = EXCLUDED.next_try_at, created_at = EXCLUDED.created_at,
  updated_at = EXCLUDED.updated_at
""")


async def intend(
    session: AsyncSession, target: str, intents: Sequence[Intent], *, now: datetime
) -> None:
    """Write the calls about to be made (each replaces the member's previous intent)."""
    rows = list({i.remote_id: i for i in intents}.values())
    if not rows:
        return
    await session.execute(
        INTEND,
        {
            "t": target,
            "now": now,
            "removing": sorted(REMOVING),
            "r": [i.remote_id for i in rows],
            "s": [i.subject_id for i in rows],
            "h": [i.email_hash for i in rows],
            "a": [i.action for i in rows],
        },
    )


RECORD = text("""
UPDATE sync_outbox o SET
  state = v.st,
  attempts = o.attempts + 1,
  last_status = v.status,
  last_title = v.title,
  given_up_reason = v.reason,
  remote_changed_at = CASE
    WHEN v.changed IS NULL THEN o.remote_changed_at
    -- a removal that found the member's status set before this intent (and not by an
    -- earlier call of ours) changed nothing: that status is not ours
    WHEN o.removes AND v.changed < o.created_at - CAST(:slack AS interval)
         AND v.changed IS DISTINCT FROM o.remote_changed_at THEN NULL
    ELSE v.changed END,
  next_try_at = CASE WHEN v.st = 'pending'
    THEN CAST(:now AS timestamptz) + least(
      CAST(:first AS interval) * power(2, o.attempts), CAST(:last AS interval))
    ELSE o.next_try_at END,
  updated_at = :now
FROM unnest(CAST(:r AS text[]), CAST(:st AS text[]), CAST(:status AS int[]),
            CAST(:title AS text[]), CAST(:reason AS text[]), CAST(:changed AS timestamptz[]))
  AS v(r, st, status, title, reason, changed)
WHERE o.target = :t AND o.remote_id = v.r AND o.state = 'pending'
""")


async def record(
    session: AsyncSession, target: str, outcomes: Sequence[Outcome], *, now: datetime
) -> None:
    """The outcome of each call made: done, tried again after a back-off, or given up."""
    if not outcomes:
        return
    await session.execute(
        RECORD,
        {
            "t": target,
            "now": now,
            "first": FIRST_RETRY,
            "last": LAST_RETRY,
            "slack": CLOCK_SLACK,
            "r": [o.remote_id for o in outcomes],
            "st": [o.state for o in outcomes],
            "status": [o.status for o in outcomes],
            "title": [o.title[:100] if o.title else None for o in outcomes],
            "reason": [o.reason[:200] if o.reason else None for o in outcomes],
            "changed": [o.remote_changed_at for o in outcomes],
        },
    )


async def due(
    session: AsyncSession, target: str, *, now: datetime, removals_at_once: bool
) -> list[Intent]:
    """The refused calls waiting whose next try has come (every removal, with
    `removals_at_once`). An intent with no outcome yet (a crash between the two) is left to
    what wrote it: the feed batch or the list's pass repeats it, the position unmoved."""
    rows = await session.execute(
        text(
            "SELECT remote_id, action, subject_id, email_hash FROM sync_outbox"
            " WHERE target = :t AND state = 'pending' AND attempts > 0"
            " AND (next_try_at <= :now OR (CAST(:eager AS boolean) AND removes))"
            " ORDER BY next_try_at"
        ),
        {"t": target, "now": now, "eager": removals_at_once},
    )
    return [Intent(r.remote_id, r.action, r.subject_id, r.email_hash) for r in rows]


async def unsubscribed_by_us(
    session: AsyncSession, target: str, members: Sequence[tuple[str, datetime | None]]
) -> set[str]:
    """Of (subscriber hash, MailChimp's `last_changed`), the members whose current status
    our own unsubscribe set: one of ours was done (its answer's `last_changed` is kept) and
    MailChimp has changed nothing since. A repeat of it waiting in the outbox (refused, to
    be tried again) does not make that status the person's: it would become an opt-out
    they never made, which no later consent could lift."""
    if not members:
        return set()
    rows = await session.execute(
        text(
            "SELECT o.remote_id FROM sync_outbox o"
            " JOIN unnest(CAST(:r AS text[]), CAST(:c AS timestamptz[])) AS m(r, changed)"
            "   ON o.remote_id = m.r"
            " WHERE o.target = :t AND o.action = 'unsubscribe'"
            " AND m.changed IS NOT NULL AND o.remote_changed_at >= m.changed"
        ),
        {"t": target, "r": [m[0] for m in members], "c": [m[1] for m in members]},
    )
    return set(rows.scalars())


async def forget_additions(session: AsyncSession, target: str, remote_ids: Sequence[str]) -> None:
    """Waiting additions about to be judged again (their new intent replaces them). A
    removal is never forgotten: it stays until it is done."""
    if remote_ids:
        await session.execute(
            text(
                "DELETE FROM sync_outbox WHERE target = :t AND NOT removes"
                " AND remote_id = ANY(CAST(:r AS text[]))"
            ),
            {"t": target, "r": list(remote_ids)},
        )


FAILURES = text("""
SELECT target, subject_id, email_hash AS member, action, state, last_status, last_title,
       attempts, next_try_at, given_up_reason, updated_at
FROM sync_outbox
WHERE (state = 'given_up' OR (state = 'pending' AND attempts > 0))
  AND (CAST(:t AS text) IS NULL OR target = :t)
ORDER BY target, created_at, remote_id OFFSET :o LIMIT :n
""")
COUNTS = text("""
SELECT target, count(*) AS n FROM sync_outbox
WHERE (state = 'given_up' OR (state = 'pending' AND attempts > 0))
GROUP BY target
""")


def _public(row: Any) -> SyncFailurePublic:
    m = dict(row._mapping)
    waiting = m["state"] == "pending"
    return SyncFailurePublic.model_validate(
        {
            **m,
            "state": "waiting" if waiting else "given_up",
            "next_try_at": m["next_try_at"] if waiting else None,
        }
    )


async def failures(
    session: AsyncSession, *, target: str | None, limit: int, cursor: str | None
) -> Page[SyncFailurePublic]:
    """The calls refused and not done: waiting for their next try, or given up."""
    offset = int((decode_cursor(cursor, 1) or [0])[0] or 0)
    rows = (
        await session.execute(FAILURES, {"t": target, "o": max(0, offset), "n": limit + 1})
    ).all()
    more = len(rows) > limit
    return Page(
        items=[_public(r) for r in rows[:limit]],
        next_cursor=encode_cursor([offset + limit]) if more else None,
    )


async def counts(session: AsyncSession) -> dict[str, int]:
    """Refused calls not done, per target (the `consent_sync_failures` gauge)."""
    rows = await session.execute(COUNTS)
    return {r.target: r.n for r in rows}
