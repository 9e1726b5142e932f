"""What is due for erasure (§7), and what must be held back though it is due.

The due date is the SQL function `retention_due_at` (migration 0009) over the same contract
summary (`CONTRACTS`) the decision gate uses: the gate's `retention_expired` and the sweep
cannot disagree about a date.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.rights import OPEN_STATUSES
from app.services.gate.decisions import CONTRACTS

DUE_AT = (
    "retention_due_at(cat.retention_rule, cat.retention_months, s.created_at,"
    " s.interest_ceased_at, ct.last_end, ct.running, :grace_days)"
)
OPEN = ", ".join(f"'{status}'" for status in OPEN_STATUSES)

# Held back, though due: an open rights request (the person is waiting for an answer about
# this very data), a legal obligation still running (Art 17(3)(b)) or a running contract (no
# ground of Art 17(1) applies): erasure would be partial; a restriction (Art 18: the person
# asked us to keep it).
DUE_SQL = f"""
SELECT s.id AS subject_id, s.category, cat.retention_rule AS rule, d.due_at,
  array_remove(ARRAY[
    CASE WHEN EXISTS (SELECT 1 FROM rights_requests rr WHERE rr.subject_id = s.id
                      AND rr.status IN ({OPEN}))
           OR EXISTS (SELECT 1 FROM rights_requests rr WHERE rr.email_hash = s.email_hash
                      AND rr.status IN ({OPEN}))
         THEN 'open_rights_request' END,
    CASE WHEN EXISTS (SELECT 1 FROM lawful_bases lb WHERE lb.subject_id = s.id
                      AND lb.basis = 'legal_obligation')
         THEN 'legal_obligation' END,
    CASE WHEN ct.running THEN 'running_contract' END,
    CASE WHEN s.restricted THEN 'restricted' END
  ]::text[], NULL) AS held_back
FROM subjects s
JOIN categories cat ON cat.key = s.category
LEFT JOIN LATERAL ({CONTRACTS.format(subject="s.id")}) ct ON true
CROSS JOIN LATERAL (SELECT {DUE_AT} AS due_at) d
WHERE s.erased_at IS NULL AND d.due_at <= :now {{only}}
ORDER BY d.due_at, s.id
"""
PARAMS = (
    bindparam("now", type_=DateTime(timezone=True)),
    bindparam("grace_days", type_=Integer()),
)
ALL_DUE = text(DUE_SQL.format(only="")).bindparams(*PARAMS)
DUE_AMONG = text(DUE_SQL.format(only="AND s.id = ANY(:ids)")).bindparams(
    *PARAMS, bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))
)
SUBJECT_DUE_AT = text(
    f"SELECT {DUE_AT} AS due_at, cat.retention_rule AS rule, cat.retention_months AS months"
    f" FROM subjects s JOIN categories cat ON cat.key = s.category"
    f" LEFT JOIN LATERAL ({CONTRACTS.format(subject='s.id')}) ct ON true WHERE s.id = :s"
).bindparams(*PARAMS)


async def find_due(
    session: AsyncSession,
    *,
    now: datetime,
    grace_days: int,
    among: Sequence[uuid.UUID] | None = None,
) -> list[Any]:
    """Live subjects due for erasure at `now` (optionally only `among` these), oldest due
    first; each row: subject_id, category, rule, due_at, held_back (reasons, or empty)."""
    if among is None:
        result = await session.execute(ALL_DUE, {"now": now, "grace_days": grace_days})
    else:
        result = await session.execute(
            DUE_AMONG, {"now": now, "grace_days": grace_days, "ids": list(among)}
        )
    return list(result.all())


async def subject_due_at(
    session: AsyncSession, subject_id: uuid.UUID, *, now: datetime, grace_days: int
) -> Any:
    """One subject's rule and due date (None: not yet dated), for its access report."""
    return (
        await session.execute(
            SUBJECT_DUE_AT, {"s": subject_id, "now": now, "grace_days": grace_days}
        )
    ).one()
