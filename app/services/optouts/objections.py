"""Objections (Art 21): recorded once per (subject, purpose), each new one fed to sync."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.changes import feed as changes

# Only purposes the catalogue knows; an existing objection stays as it was.
# The one INSERT of an objection (here, and GPC's in the consent write).
INSERT_OBJECTION = "INSERT INTO objections (subject_id, purpose, source, objected_at)"
RECORD = text(
    INSERT_OBJECTION + " SELECT :s, key, :source, now() FROM purposes WHERE key = ANY(:purposes)"  # noqa: S608 - constant SQL
    " ON CONFLICT DO NOTHING RETURNING purpose"
)


async def record(
    session: AsyncSession, subject: Any, purposes: Sequence[str], *, source: str
) -> list[str]:
    """Object to `purposes` for `subject`; the purposes newly objected to, sorted. Each new
    objection is a change-feed entry: sync must stop pushing the subject for it."""
    added = await session.execute(
        RECORD, {"s": subject.id, "purposes": list(purposes), "source": source}
    )
    new = sorted(added.scalars())
    for purpose in new:
        await changes.append(
            session,
            "objection",
            subject_id=subject.id,
            email_hash=subject.email_hash,
            purpose=purpose,
        )
    return new
