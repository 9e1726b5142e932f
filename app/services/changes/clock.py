"""The gate's clock: every instant at which time alone changes a subject's answer, kept in
`gate_moments` (migration 0018) by the writes that create it, and fed to the change feed
once it has passed.

Kinds (each also the change-feed entry's kind):
- `contract.ended` (per purpose): a contract basis' `contract_end` (the gate's `contract_ended`);
- `contract.started` (per purpose): a contract's `contract_start` still to come when written
  (the gate allows from then on);
- `interest.ceased` (subject): a prospect's `interest_ceased_at` plus the grace period, its
  retention due date (the gate's `retention_expired`, category rule `interest_ceased`);
- `retention.due` (subject): the retention due date of the other rules (`contract_end_plus`,
  `fixed_period`), from `retention_due_at`, the function the gate and the sweep use;
- `consent.expired` (per purpose): a given consent's end under the purpose's
  `consent_valid_months` (the gate's `consent_expired`), whatever the basis: where consent
  is not the basis the entry changes no answer, and sync merely asks again.

`schedule` recomputes a set of subjects' rows from what is stored now (new rows, moved ones
armed again, withdrawn ones removed, an erased subject's all removed); the import composes
`schedule_sql`. The consent write keeps its own purpose's `consent.expired` row in the same
statement (`consent_moment_ctes`), and a purpose's new period recomputes that purpose's rows
(`schedule_purpose`). `feed_due` (the background task, one per database under an advisory lock)
writes one entry per passed row and marks it fed, in one transaction, exactly once.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import current_settings
from app.services.changes.feed import INSERT_CHANGE
from app.services.gate.decisions import CONSENT_EXPIRES_AT, CONTRACTS
from app.services.retention.due import DUE_AT

CLOCK_LOCK = 7_310_556
BATCH = 5000
# The subject's contracts as they will stand once every dated one has ended: the due date
# `retention_due_at` gives then is the instant the gate's `retention_expired` starts.
CONTRACTS_EVER = CONTRACTS.format(subject="s.id").replace(":now", "CAST('infinity' AS timestamptz)")
# The instants given consents run out: the gate's own expression, over consent states that
# `{where}` (SQL on `cs`, the state, and `p`, its purpose) selects.
CONSENT_EXPIRY = f"""
SELECT cs.subject_id, cs.purpose, 'consent.expired' AS kind,
  {CONSENT_EXPIRES_AT.format(state="cs", purpose="p")} AS due_at
FROM consent_state cs JOIN purposes p ON p.key = cs.purpose
WHERE cs.status = 'given' AND cs.recipient = '' AND p.consent_valid_months IS NOT NULL
  AND {{where}}"""  # noqa: S608 - constant SQL
SUBJECTS_CONSENT_EXPIRY = CONSENT_EXPIRY.replace(
    "{where}", "cs.subject_id IN (SELECT id FROM live)"
)
PURPOSE_CONSENT_EXPIRY = CONSENT_EXPIRY.replace("{where}", "cs.purpose = :purpose")
WRITTEN_CONSENT_EXPIRY = CONSENT_EXPIRY.replace("consent_state cs", "{state} cs").replace(
    "{where}", "true"
)
# Arming a moment: a new one, or one moved (armed again, fed_at NULL); one unchanged keeps
# its fed_at.
UPSERT_MOMENT = """INSERT INTO gate_moments (subject_id, purpose, kind, due_at)
SELECT subject_id, purpose, kind, due_at FROM {source}
ON CONFLICT (subject_id, coalesce(purpose, ''), kind) DO UPDATE
  SET due_at = EXCLUDED.due_at, fed_at = NULL
  WHERE gate_moments.due_at IS DISTINCT FROM EXCLUDED.due_at"""
# The moments of the subjects `{subjects}` (a query of ids) as they stand now.
MOMENTS = f"""
live AS (SELECT id, category, created_at, interest_ceased_at FROM subjects
         WHERE id IN ({{subjects}}) AND erased_at IS NULL),
wanted AS (
  SELECT lb.subject_id, lb.purpose, 'contract.ended' AS kind, lb.contract_end AS due_at
  FROM lawful_bases lb JOIN live s ON s.id = lb.subject_id
  WHERE lb.basis = 'contract' AND lb.contract_end IS NOT NULL
  UNION ALL
  SELECT lb.subject_id, lb.purpose, 'contract.started', lb.contract_start
  FROM lawful_bases lb JOIN live s ON s.id = lb.subject_id
  WHERE lb.basis = 'contract' AND lb.contract_start > now()
  UNION ALL
  SELECT s.id, NULL, CASE cat.retention_rule WHEN 'interest_ceased' THEN 'interest.ceased'
    ELSE 'retention.due' END, d.due_at
  FROM live s JOIN categories cat ON cat.key = s.category
  LEFT JOIN LATERAL ({CONTRACTS_EVER}) ct ON true
  CROSS JOIN LATERAL (SELECT {DUE_AT} AS due_at) d
  WHERE d.due_at IS NOT NULL
  UNION ALL
  {SUBJECTS_CONSENT_EXPIRY}
)"""  # noqa: S608 - constant SQL
# The one writer of `gate_moments`' rows: a moment moved is armed again (fed_at NULL), one
# unchanged keeps its fed_at, one no longer there (a basis ended, interest_ceased_at
# cleared, the subject erased) is deleted, fed or not.
SCHEDULE = f"""
WITH {MOMENTS},
gone AS (
  DELETE FROM gate_moments m WHERE m.subject_id IN ({{subjects}}) AND NOT EXISTS (
    SELECT 1 FROM wanted w WHERE w.subject_id = m.subject_id AND w.kind = m.kind
      AND coalesce(w.purpose, '') = coalesce(m.purpose, ''))
)
{UPSERT_MOMENT.format(source="wanted")}
"""  # noqa: S608 - constant SQL
# One purpose's `consent.expired` rows after its period changed (`:purpose`), set-based:
# a consent already past its new end is fed on the clock's next run.
SCHEDULE_PURPOSE = f"""
WITH wanted AS ({PURPOSE_CONSENT_EXPIRY}
  AND EXISTS (SELECT 1 FROM subjects s WHERE s.id = cs.subject_id AND s.erased_at IS NULL)),
gone AS (
  DELETE FROM gate_moments m WHERE m.purpose = :purpose AND m.kind = 'consent.expired'
    AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.subject_id = m.subject_id)
)
{UPSERT_MOMENT.format(source="wanted")}
"""  # noqa: S608 - constant SQL
# The consent write's own moment, in its statement: from the state rows it wrote (`{state}`,
# returned only where the event became the state: a late, older event moves nothing), a
# `given` arms its purpose's end (a fresh `given` moves it), anything else removes it.
CONSENT_MOMENT_CTES = f"""
consent_moment_gone AS (
  DELETE FROM gate_moments m USING {{state}} st
  WHERE st.status <> 'given' AND st.recipient = '' AND m.subject_id = st.subject_id
    AND m.purpose = st.purpose AND m.kind = 'consent.expired'
),
consent_moment_due AS ({WRITTEN_CONSENT_EXPIRY}),
consent_moment AS (
  {UPSERT_MOMENT.format(source="consent_moment_due")}
)"""  # noqa: S608 - constant SQL
BY_IDS = "SELECT unnest(CAST(:ids AS uuid[]))"
BY_CATEGORY = "SELECT id FROM subjects WHERE category = :category"

# Passed and not yet fed, oldest first; rows another run holds are skipped, and a row fed
# meanwhile fails `fed_at IS NULL` when re-read under its lock: each is fed once.
FEED_DUE = text(f"""
WITH due AS (
  SELECT id FROM gate_moments WHERE fed_at IS NULL AND due_at <= :now
  ORDER BY due_at, id LIMIT :batch FOR UPDATE SKIP LOCKED
),
fed AS (
  UPDATE gate_moments m SET fed_at = :now FROM due WHERE m.id = due.id
  RETURNING m.id, m.subject_id, m.purpose, m.kind, m.due_at
),
entries AS (
  {INSERT_CHANGE}
  SELECT f.kind, f.subject_id, s.email_hash, f.purpose, f.due_at
  FROM fed f JOIN subjects s ON s.id = f.subject_id AND s.erased_at IS NULL
  ORDER BY f.due_at, f.id
)
SELECT count(*) FROM fed
""").bindparams(bindparam("now", type_=DateTime(timezone=True)))  # noqa: S608 - constant SQL
PENDING = text(
    "SELECT count(*) FROM gate_moments WHERE fed_at IS NULL AND due_at <= :now"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))


def grace_days() -> int:
    """The prospects' grace period, as the gate reads it."""
    return current_settings().retention_prospect_grace_days


def consent_moment_ctes(state: str) -> str:
    """The consent write's CTEs keeping `consent.expired` for the state rows `state` wrote
    (a CTE RETURNING subject_id, purpose, recipient, status, occurred_at)."""
    return CONSENT_MOMENT_CTES.replace("{state}", state)


def schedule_sql(subjects: str) -> str:
    """The scheduling statement for the subjects a query of ids names (`:grace_days`)."""
    return SCHEDULE.replace("{subjects}", subjects)


async def schedule(
    session: AsyncSession,
    subject_ids: Sequence[uuid.UUID] = (),
    *,
    category: str | None = None,
) -> None:
    """Bring the moments of these subjects (or of a category's) up to date, in the caller's
    transaction, after its write."""
    params: dict[str, Any] = {"grace_days": grace_days()}
    if category is not None:
        sql, params["category"] = schedule_sql(BY_CATEGORY), category
    else:
        sql, params["ids"] = schedule_sql(BY_IDS), list(subject_ids)
    await session.execute(text(sql), params)


async def schedule_purpose(session: AsyncSession, purpose: str) -> None:
    """Recompute one purpose's consent ends after its `consent_valid_months` changed, in the
    caller's transaction: every consent given for it at once, in one statement."""
    await session.execute(text(SCHEDULE_PURPOSE), {"purpose": purpose})


async def feed_due(session: AsyncSession, *, now: datetime) -> int:
    """One change-feed entry per moment passed at `now`, marked fed; returns how many. 0
    when another run holds the clock (one per database)."""
    locked = (
        await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": CLOCK_LOCK})
    ).scalar_one()
    if not locked:
        return 0
    total = 0
    while True:
        done = int((await session.execute(FEED_DUE, {"now": now, "batch": BATCH})).scalar_one())
        total += done
        if done < BATCH:
            return total


async def pending(session: AsyncSession, *, now: datetime) -> int:
    """Moments passed at `now` and not yet fed (the metrics' gauge)."""
    return int((await session.execute(PENDING, {"now": now})).scalar_one())
