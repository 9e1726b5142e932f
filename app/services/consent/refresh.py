"""Consents due for refresh: given consents whose purpose sets `consent_valid_months` and
that run out within a number of days, so the CRM can ask again before the gate denies
`consent_expired`. The instant is the gate's own expression (decisions.CONSENT_EXPIRES_AT),
so this list, the decisions and the clock's `consent.expired` moments cannot disagree.
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, String, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Unprocessable
from app.core.pagination import Page, decode_cursor, encode_cursor, page_of
from app.models.base import utcnow
from app.models.consent import RefreshItem
from app.services.catalogue import entries as catalogue
from app.services.gate.decisions import CONSENT_EXPIRES_AT

# Month arithmetic clamps to a month's end (31 Jan + 1 month = 28 Feb), so `occurred_at`'s
# bounds below are the exact condition widened by a few days: they only let PostgreSQL
# walk the (purpose, occurred_at) index of given consents; `e.expires_at` decides.
SLACK = "interval '4 days'"
DUE_SOON = text(f"""
SELECT s.id AS subject_id, s.email, cs.purpose, cs.event_id, cs.occurred_at AS given_at,
  e.expires_at, s.restricted,
  EXISTS (SELECT 1 FROM marketing_optouts o WHERE o.email_hash = s.email_hash)
    AS marketing_opt_out
FROM purposes p
JOIN consent_state cs ON cs.purpose = p.key AND cs.status = 'given' AND cs.recipient = ''
  AND cs.occurred_at > :now - make_interval(months => p.consent_valid_months) - {SLACK}
  AND cs.occurred_at <= :until - make_interval(months => p.consent_valid_months) + {SLACK}
JOIN subjects s ON s.id = cs.subject_id AND s.erased_at IS NULL
CROSS JOIN LATERAL (
  SELECT {CONSENT_EXPIRES_AT.format(state="cs", purpose="p")} AS expires_at) e
WHERE p.consent_valid_months IS NOT NULL AND (:purpose IS NULL OR p.key = :purpose)
  AND e.expires_at > :now AND e.expires_at <= :until
  AND (:after_at IS NULL OR (e.expires_at, s.id, cs.purpose)
       > (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid), CAST(:after_purpose AS text)))
ORDER BY e.expires_at, s.id, cs.purpose
LIMIT :n
""").bindparams(  # noqa: S608 - constant SQL
    bindparam("purpose", type_=String()),
    bindparam("after_at", type_=String()),
    bindparam("now", type_=DateTime(timezone=True)),
    bindparam("until", type_=DateTime(timezone=True)),
)


def _after(cursor: str | None) -> list[Any]:
    """The keyset (expires_at, subject id, purpose) a cursor carries, checked."""
    after = decode_cursor(cursor, 3)
    if after is None:
        return [None, None, None]
    try:
        datetime.fromisoformat(after[0])
        after[1] = str(uuid.UUID(after[1]))
    except (TypeError, ValueError, AttributeError) as exc:
        raise Unprocessable("The cursor is not valid.") from exc
    return after


async def due_for_refresh(
    session: AsyncSession,
    *,
    purpose: str | None,
    within_days: int,
    limit: int,
    cursor: str | None,
    now: datetime | None = None,
) -> Page[RefreshItem]:
    """Given consents that run out after `now` and within `within_days` of it, soonest
    first (all purposes with a period when `purpose` is None)."""
    if purpose is not None:
        await catalogue.require_purposes(session, [purpose], field="purpose")
    now = now or utcnow()
    after = _after(cursor)
    params = {
        "purpose": purpose,
        "now": now,
        "until": now + timedelta(days=within_days),
        "after_at": after[0],
        "after_id": after[1],
        "after_purpose": after[2],
        "n": limit + 1,
    }
    rows = (await session.execute(DUE_SOON, params)).all()
    return page_of(
        rows,
        limit,
        lambda r: encode_cursor([r.expires_at.isoformat(), str(r.subject_id), r.purpose]),
        lambda r: RefreshItem.model_validate(dict(r._mapping)),
    )
