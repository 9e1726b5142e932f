"""The delivery outbox: one row per (endpoint, feed entry of a kind it chose), written by
the change-feed sequencer in the very statement that numbers the entry (`INSERT_DELIVERIES`,
composed by app.services.changes.feed), so no entry committed to the feed can miss its
webhook. The worker claims, per endpoint, the oldest waiting delivery of each subject (a
later one waits while an earlier one is retried) and records each outcome."""

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import Conflict, NotFound
from app.core.pagination import Page, decode_cursor, encode_cursor
from app.models.webhook import WebhookDeliveryPublic

# Composed into the sequencer's statement: `numbered` is its CTE of the entries it has just
# given positions (seq, kind, subject_id). Disabled endpoints (410 Gone) get nothing.
INSERT_DELIVERIES = """
INSERT INTO webhook_deliveries (id, endpoint_key, seq, kind, subject_id, status, attempts,
  next_try_at, expires_at, created_at, updated_at)
SELECT gen_random_uuid(), e.key, n.seq, n.kind, n.subject_id, 'pending', 0, now(),
  now() + make_interval(secs => CAST(:webhook_window AS double precision)), now(), now()
FROM numbered n JOIN webhook_endpoints e ON n.kind = ANY (e.kinds) AND e.disabled_at IS NULL
"""
# Per enabled endpoint, the due deliveries after its cursor (`:keys`/`:afters`; none: from
# the start) that are the oldest waiting one of their subject, in feed order, with the feed
# entry they carry (read now: nothing beyond the feed). The head test is a scalar subquery,
# not NOT EXISTS: an EXISTS is turned into an anti-join, which without fresh statistics
# (right after a burst, before autovacuum's ANALYZE) was planned as a scan of every pending
# row per row (0.5 s a claim at 10,000 pending); a subquery stays one index probe per row.
CLAIM = text("""
SELECT d.endpoint_key, d.id, d.seq, d.kind, d.attempts, d.expires_at,
       c.subject_id, c.email_hash, c.purpose, c.at
FROM webhook_endpoints e
LEFT JOIN unnest(CAST(:keys AS text[]), CAST(:afters AS bigint[])) AS a(key, after)
  ON a.key = e.key
CROSS JOIN LATERAL (
  SELECT d.* FROM webhook_deliveries d
  WHERE d.endpoint_key = e.key AND d.status = 'pending' AND d.seq > coalesce(a.after, -1)
    AND d.next_try_at <= :now
    AND (d.subject_id IS NULL OR d.seq = (
      SELECT p.seq FROM webhook_deliveries p
      WHERE p.endpoint_key = d.endpoint_key AND p.subject_id = d.subject_id
        AND p.status = 'pending'
      ORDER BY p.seq LIMIT 1))
  ORDER BY d.seq LIMIT :n
) d
JOIN changes c ON c.seq = d.seq
WHERE e.disabled_at IS NULL
ORDER BY d.endpoint_key, d.seq
""")
RECORD = text("""
UPDATE webhook_deliveries d SET
  status = v.st, attempts = d.attempts + 1, last_status = v.code, last_error = v.err,
  next_try_at = coalesce(v.next_at, d.next_try_at), delivered_at = v.done_at, updated_at = :now
FROM unnest(CAST(:id AS uuid[]), CAST(:st AS text[]), CAST(:code AS int[]),
            CAST(:err AS text[]), CAST(:next_at AS timestamptz[]),
            CAST(:done_at AS timestamptz[])) AS v(id, st, code, err, next_at, done_at)
WHERE d.id = v.id AND d.status = 'pending'
""")
RETRY = text("""
UPDATE webhook_deliveries SET status = 'pending', next_try_at = :now, updated_at = :now,
  expires_at = CAST(:now AS timestamptz) + make_interval(secs => CAST(:window AS double precision))
WHERE endpoint_key = :key AND id = :id AND status = 'failed'
""")
PUBLIC = (
    "id, seq, kind, subject_id, status, attempts, last_status, last_error, next_try_at,"
    " expires_at, created_at, delivered_at"
)
LIST = text(f"""
SELECT {PUBLIC} FROM webhook_deliveries
WHERE endpoint_key = :key AND (CAST(:status AS text) IS NULL OR status = :status)
  AND seq < :before
ORDER BY seq DESC LIMIT :n
""")  # noqa: S608 - constant SQL
FAILED = text(
    "SELECT endpoint_key, count(*) AS n FROM webhook_deliveries"
    " WHERE status = 'failed' GROUP BY endpoint_key"
)


@dataclass(frozen=True)
class Claimed:
    endpoint_key: str
    id: uuid.UUID
    seq: int
    kind: str
    attempts: int
    expires_at: datetime
    entry: dict[str, Any]  # the feed entry, exactly as GET /v1/changes shows it


@dataclass(frozen=True)
class Outcome:
    id: uuid.UUID
    status_code: int | None  # None: no answer (time-out, refused address, connection)
    error: str | None = None


def window_seconds(settings: Settings) -> float:
    return settings.webhook_retry_hours * 3600


async def claim(
    session: AsyncSession,
    *,
    now: datetime,
    per_endpoint: int,
    after: dict[str, int] | None = None,
) -> list[Claimed]:
    """Up to `per_endpoint` due subject heads per endpoint, past its cursor in `after`."""
    after = after or {}
    params = {"now": now, "n": per_endpoint, "keys": list(after), "afters": list(after.values())}
    rows = await session.execute(CLAIM, params)
    return [
        Claimed(
            r.endpoint_key,
            r.id,
            r.seq,
            r.kind,
            r.attempts,
            r.expires_at,
            {
                "seq": r.seq,
                "kind": r.kind,
                "subject_id": str(r.subject_id) if r.subject_id else None,
                "email_hash": r.email_hash,
                "purpose": r.purpose,
                "at": r.at,
            },
        )
        for r in rows
    ]


def backoff(settings: Settings, attempts: int) -> timedelta:
    """The pause after try number `attempts`: doubling from the first pause up to the cap,
    each drawn at random between half and all of it (receivers coming back from an outage
    are not hit by every sender at the same instant)."""
    full = min(
        settings.webhook_retry_first_seconds * 2 ** max(0, attempts - 1),
        settings.webhook_retry_max_seconds,
    )
    return timedelta(seconds=full * secrets.SystemRandom().uniform(0.5, 1.0))


def _next(settings: Settings, c: Claimed, o: Outcome, now: datetime) -> tuple[str, Any, Any]:
    """(status, next try, delivered at) after outcome `o` of claimed `c`."""
    if o.status_code is not None and 200 <= o.status_code < 300:
        return "delivered", None, now
    if o.status_code == 410:
        return "pending", now, None  # sent again only once a PUT enables the endpoint
    if now >= c.expires_at:
        return "failed", None, None
    return "pending", min(now + backoff(settings, c.attempts + 1), c.expires_at), None


async def record(
    session: AsyncSession,
    settings: Settings,
    claimed: dict[uuid.UUID, Claimed],
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
) -> int:
    """Store the outcome of each call; returns how many failed for good."""
    if not outcomes:
        return 0
    decided = [(o, _next(settings, claimed[o.id], o, now)) for o in outcomes]
    await session.execute(
        RECORD,
        {
            "now": now,
            "id": [o.id for o, _ in decided],
            "st": [d[0] for _, d in decided],
            "code": [o.status_code for o, _ in decided],
            "err": [(o.error or "")[:200] or None for o, _ in decided],
            "next_at": [d[1] for _, d in decided],
            "done_at": [d[2] for _, d in decided],
        },
    )
    return sum(1 for _, d in decided if d[0] == "failed")


ONE = text(f"SELECT {PUBLIC} FROM webhook_deliveries WHERE endpoint_key = :k AND id = :i")  # noqa: S608


async def retry(
    session: AsyncSession, settings: Settings, key: str, delivery_id: uuid.UUID, now: datetime
) -> WebhookDeliveryPublic:
    """Send a failed delivery again, with a new retry window; the delivery as it now is."""
    params = {"key": key, "id": delivery_id, "now": now, "window": window_seconds(settings)}
    retried = (await session.execute(RETRY, params)).rowcount  # type: ignore[attr-defined]
    row = (await session.execute(ONE, {"k": key, "i": delivery_id})).one_or_none()
    if row is None:
        raise NotFound(f"No delivery {delivery_id} for webhook endpoint `{key}`.")
    if not retried:
        raise Conflict(f"The delivery is {row.status}; only a failed one is sent again.")
    return _public(row)


async def listing(
    session: AsyncSession, key: str, *, status: str | None, limit: int, cursor: str | None
) -> Page[WebhookDeliveryPublic]:
    """Newest first: attempts, the last answer, the next try."""
    before = int((decode_cursor(cursor, 1) or [2**62])[0] or 0)
    rows = (
        await session.execute(
            LIST, {"key": key, "status": status, "before": before, "n": limit + 1}
        )
    ).all()
    items = [_public(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items=items, next_cursor=encode_cursor([items[-1].seq]) if more else None)


async def failed_counts(session: AsyncSession) -> dict[str, int]:
    """Deliveries given up per endpoint (the `consent_webhook_failures` gauge)."""
    return {r.endpoint_key: r.n for r in await session.execute(FAILED)}


def _public(row: Any) -> WebhookDeliveryPublic:
    m = dict(row._mapping)
    if m["status"] != "pending":
        m["next_try_at"] = None
    return WebhookDeliveryPublic.model_validate(m)
