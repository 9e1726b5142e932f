"""Who must be asked for consent again after a policy change (`reconsent_purposes`).

The rule is the gate's own fragment (decisions.CONSENT_OUTDATED), so this list and the
decisions' `consent_outdated` cannot disagree.
"""

import uuid
from typing import Any

from sqlalchemy import DateTime, String, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Unprocessable
from app.core.pagination import Page, decode_cursor, encode_cursor, page_of
from app.models.base import utcnow
from app.models.consent import ReconsentItem
from app.services.catalogue import entries as catalogue
from app.services.gate.decisions import CONSENT_OUTDATED

# Live subjects whose current consent is `given` and outdated, in (subject, purpose,
# recipient) order for keyset paging.
OUTDATED = text(f"""
SELECT s.id AS subject_id, s.email, cs.purpose, cs.recipient, ce.policy_version,
  cs.occurred_at AS consented_at, s.restricted,
  (SELECT np.version FROM policies np
   WHERE cs.purpose = ANY (np.reconsent_purposes)
     AND coalesce(np.published_at, np.created_at) <= :now
   ORDER BY coalesce(np.published_at, np.created_at) DESC, np.created_at DESC, np.version DESC
   LIMIT 1) AS asked_by_version,
  EXISTS (SELECT 1 FROM marketing_optouts o WHERE o.email_hash = s.email_hash)
    AS marketing_opt_out
FROM consent_state cs
JOIN subjects s ON s.id = cs.subject_id AND s.erased_at IS NULL
LEFT JOIN consent_events ce ON ce.id = cs.event_id
WHERE cs.status = 'given' AND (:purpose IS NULL OR cs.purpose = :purpose)
  AND (:after_id IS NULL OR (s.id, cs.purpose, cs.recipient) > (CAST(:after_id AS uuid),
       CAST(:after_purpose AS text), CAST(:after_recipient AS text)))
  AND {CONSENT_OUTDATED.format(state="cs")}
ORDER BY s.id, cs.purpose, cs.recipient
LIMIT :n
""").bindparams(
    bindparam("purpose", type_=String()),
    bindparam("after_id", type_=String()),
    bindparam("now", type_=DateTime(timezone=True)),
)


def _item(row: Any) -> ReconsentItem:
    return ReconsentItem.model_validate({**row._mapping, "recipient": row.recipient or None})


async def outdated_consents(
    session: AsyncSession, *, purpose: str | None, limit: int, cursor: str | None
) -> Page[ReconsentItem]:
    if purpose is not None:
        await catalogue.require_purposes(session, [purpose], field="purpose")
    after = decode_cursor(cursor, 3) or [None, None, None]
    if cursor is not None:
        try:
            after[0] = str(uuid.UUID(after[0]))
        except (TypeError, ValueError, AttributeError) as exc:
            raise Unprocessable("The cursor is not valid.") from exc
    params = {
        "purpose": purpose,
        "after_id": after[0],
        "after_purpose": after[1],
        "after_recipient": after[2],
        "now": utcnow(),
        "n": limit + 1,
    }
    rows = (await session.execute(OUTDATED, params)).all()
    return page_of(
        rows,
        limit,
        lambda r: encode_cursor([str(r.subject_id), r.purpose, r.recipient]),
        _item,
    )
