"""The explicit transfer consent on the preference page (§8, Art 49(1)(a)): one per recipient
outside the EEA/UK whose transfers the catalogue rests on explicit consent (as the gate's
`transfer_not_permitted` reads it), naming the recipient and the country and saying what the
transfer means. It is recorded as the API and the import record it: a consent event for the
purpose `international_transfer` naming the recipient (`pages.give_transfer`)."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.person.wording import country_name, notice_sha, transfer_notice

TRANSFER_PURPOSE = "international_transfer"
# The recipients whose transfers need the person's consent, and any other the person has a
# transfer consent for (still withdrawable after the catalogue named a safeguard instead).
TRANSFERS_WITH_STATE = text("""
SELECT r.key, r.name, r.country,
  NOT r.inside_eea_uk AND r.transfer_safeguard = 'explicit_consent' AS by_consent,
  ARRAY(SELECT p.description FROM purposes p WHERE p.key = ANY (r.purposes)
        ORDER BY p.key) AS uses,
  cs.status, cs.occurred_at
FROM recipients r
LEFT JOIN consent_state cs ON cs.subject_id = :s AND cs.purpose = 'international_transfer'
  AND cs.recipient = r.key
WHERE (NOT r.inside_eea_uk AND r.transfer_safeguard = 'explicit_consent')
  OR cs.subject_id IS NOT NULL
ORDER BY r.name, r.key
""")
ONE_RECIPIENT = text("""
SELECT r.name, r.country,
  ARRAY(SELECT p.description FROM purposes p WHERE p.key = ANY (r.purposes)
        ORDER BY p.key) AS uses
FROM recipients r
WHERE r.key = :r AND NOT r.inside_eea_uk AND r.transfer_safeguard = 'explicit_consent'
""")


@dataclass
class TransferRow:
    key: str
    name: str
    country: str  # as a sentence names it
    status: str | None  # given | withdrawn | None (never asked)
    since: datetime | None
    can_give: bool
    notice: str | None = None
    notice_sha256: str | None = None


def _row(r: Any, controller: str) -> TransferRow:
    row = TransferRow(
        key=r.key,
        name=r.name,
        country=country_name(r.country),
        status=r.status,
        since=r.occurred_at,
        can_give=r.by_consent and r.status != "given",
    )
    if row.can_give:
        row.notice = transfer_notice(controller, r.name, r.country, r.uses)
        row.notice_sha256 = notice_sha(row.notice)
    return row


async def transfer_rows(
    session: AsyncSession, subject_id: uuid.UUID, controller: str
) -> list[TransferRow]:
    """The page's transfer section for the subject."""
    rows = (await session.execute(TRANSFERS_WITH_STATE, {"s": subject_id})).all()
    return [_row(r, controller) for r in rows]


async def notice_for(session: AsyncSession, controller: str, recipient: str) -> str | None:
    """The wording the page shows for this recipient now; None when its transfers do not
    rest on consent (unknown, inside the EEA/UK, or covered by a safeguard)."""
    r = (await session.execute(ONE_RECIPIENT, {"r": recipient})).one_or_none()
    return None if r is None else transfer_notice(controller, r.name, r.country, r.uses)
