"""The change feed: what sync clients must propagate, in a order that never skips.

Writers append rows without a position and without locks. One sequencer at a time (a
transaction-level advisory lock, the audit sealer's pattern) gives the committed rows it
sees the next positions. A row committed late is simply sequenced late, after everything
already served, so a reader paging by position (`seq`) never skips one.
"""

import uuid

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import current_settings
from app.models.base import utcnow
from app.models.change import ChangePage, ChangePublic
from app.services.gate.decisions import CONSENT_OUTDATED
from app.services.webhooks.deliveries import INSERT_DELIVERIES, window_seconds

SEQUENCE_LOCK = 7_310_553
# The one INSERT of a change-feed entry: `append` below, and the set-based writers (consent
# events, a web form's prospect, the import, re-consent) select their entries into it.
INSERT_CHANGE = "INSERT INTO changes (kind, subject_id, email_hash, purpose, at)"
APPEND = text(INSERT_CHANGE + " VALUES (:kind, :subject_id, :email_hash, :purpose, now())")
# Committed rows without a position, in insertion order, numbered after the current head.
# The same statement writes each numbered entry's webhook deliveries (the outbox of the
# endpoints that chose its kind): a position and its deliveries commit together or not at all.
SEQUENCE = text(f"""
WITH head AS (SELECT coalesce(max(seq), 0) AS n FROM changes),
pending AS (
  SELECT id, row_number() OVER (ORDER BY id) AS k FROM changes
  WHERE seq IS NULL ORDER BY id LIMIT :batch
),
numbered AS (
  UPDATE changes c SET seq = head.n + pending.k
  FROM pending, head WHERE c.id = pending.id
  RETURNING c.seq, c.kind, c.subject_id
),
fanned AS ({INSERT_DELIVERIES} RETURNING 1)
SELECT count(*) FROM numbered
""")  # noqa: S608 - constant SQL
# Re-consent changes the gate's answer without any write: at the moment a policy version
# naming `reconsent_purposes` takes effect (its published_at, possibly in the future). Once
# that moment has passed, one `consent.outdated` entry per consent it made outdated (the
# gate's own fragment, so the two cannot disagree), written once per version, so that sync
# drops those subjects as it drops a withdrawal. Both run under the sequencer's lock.
POLICIES_TAKING_EFFECT = text("""
UPDATE policies SET reconsent_fed_at = :now
WHERE cardinality(reconsent_purposes) > 0 AND reconsent_fed_at IS NULL
  AND coalesce(published_at, created_at) <= :now
RETURNING reconsent_purposes
""").bindparams(bindparam("now", type_=DateTime(timezone=True)))
OUTDATED_CONSENTS = text(f"""
{INSERT_CHANGE}
SELECT DISTINCT 'consent.outdated', s.id, s.email_hash, cs.purpose, CAST(:now AS timestamptz)
FROM consent_state cs
JOIN subjects s ON s.id = cs.subject_id AND s.erased_at IS NULL
WHERE cs.status = 'given' AND cs.purpose = ANY (CAST(:purposes AS text[]))
  AND {CONSENT_OUTDATED.format(state="cs")}
""").bindparams(bindparam("now", type_=DateTime(timezone=True)))  # noqa: S608 - constant SQL
READ = text(
    "SELECT seq, kind, subject_id, email_hash, purpose, at FROM changes"
    " WHERE seq > :after ORDER BY seq LIMIT :limit"
)
BATCH = 5000


async def append(
    session: AsyncSession,
    kind: str,
    *,
    subject_id: uuid.UUID | None,
    email_hash: str | None,
    purpose: str | None = None,
) -> None:
    await session.execute(
        APPEND,
        {"kind": kind, "subject_id": subject_id, "email_hash": email_hash, "purpose": purpose},
    )


async def _feed_policies_taking_effect(session: AsyncSession) -> None:
    now = utcnow()
    due = (await session.execute(POLICIES_TAKING_EFFECT, {"now": now})).scalars().all()
    purposes = sorted({p for listed in due for p in listed})
    if purposes:
        await session.execute(OUTDATED_CONSENTS, {"now": now, "purposes": purposes})


async def sequence_pending(session: AsyncSession) -> int:
    """Give committed rows their positions; returns how many. 0 if another sequencer runs
    (its positions land after everything visible now, so nothing is skipped meanwhile)."""
    locked = (
        await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SEQUENCE_LOCK})
    ).scalar_one()
    if not locked:
        return 0
    await _feed_policies_taking_effect(session)
    total = 0
    window = window_seconds(current_settings())  # the webhooks' retry window
    while True:
        params = {"batch": BATCH, "webhook_window": window}
        done = int((await session.execute(SEQUENCE, params)).scalar_one())
        total += done
        if done < BATCH:
            return total


async def read(session: AsyncSession, *, after: int, limit: int) -> ChangePage:
    """Changes after position `after`. Sequences first, so a reader sees what is committed."""
    await sequence_pending(session)
    rows = (await session.execute(READ, {"after": after, "limit": limit})).all()
    items = [ChangePublic.model_validate(r._mapping) for r in rows]
    return ChangePage(items=items, next_after=items[-1].seq if items else after)


async def head(session: AsyncSession) -> int:
    """The last position given (0 for an empty feed), after sequencing what is committed."""
    await sequence_pending(session)
    return int(
        (await session.execute(text("SELECT coalesce(max(seq), 0) FROM changes"))).scalar_one()
    )
