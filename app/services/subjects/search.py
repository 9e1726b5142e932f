"""The privacy team's search for a person (the console): by e-mail, or by the start of a
name. A subject-listing service (tests/test_architecture.py lists it): it hands personal
data to the privacy team answering a person, not to a processing use, so its callers say
why on the line.

An e-mail is matched exactly (`uq_subjects_email_live`); a name by its start, whatever the
case (`ix_subjects_name_prefix`, migration 0028), paged by keyset on (lower(name), id).
"""

import uuid
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.errors import Unprocessable
from app.core.pagination import Page, decode_cursor, encode_cursor
from app.models.subject import Subject, SubjectPublic, to_public
from app.models.text import normalise_email

LOWER_NAME = func.lower(col(Subject.name))


def _escaped(prefix: str) -> str:
    """A name's start as a LIKE pattern: its own `%` and `_` match themselves."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _after(cursor: str | None) -> Any:
    values = decode_cursor(cursor, 2)
    if values is None:
        return None
    try:
        name, last = str(values[0]), uuid.UUID(values[1])
    except (TypeError, ValueError, AttributeError) as exc:
        raise Unprocessable("The cursor is not valid.") from exc
    return or_(LOWER_NAME > name, and_(LOWER_NAME == name, col(Subject.id) > last))


async def find_people(
    session: AsyncSession, query: str, *, limit: int = 25, cursor: str | None = None
) -> Page[SubjectPublic]:
    """Subjects whose e-mail is `query` (when it holds an `@`) or whose name starts with it;
    live ones only for names (an erased subject has no name left to find)."""
    text = query.strip()
    if "@" in text:
        # Erasure empties the e-mail, so only live rows can match: saying so lets the
        # unique index on live e-mails answer (no scan of every subject).
        stmt = select(Subject).where(
            col(Subject.email) == normalise_email(text), col(Subject.erased_at).is_(None)
        )
        rows = list((await session.execute(stmt.limit(limit))).scalars())
        return Page(items=[to_public(s) for s in rows], next_cursor=None)
    stmt = (
        select(Subject)
        .where(
            col(Subject.erased_at).is_(None),
            LOWER_NAME.like(_escaped(text.lower()), escape="\\"),
        )
        .order_by(LOWER_NAME, col(Subject.id))
    )
    after = _after(cursor)
    if after is not None:
        stmt = stmt.where(after)
    rows = list((await session.execute(stmt.limit(limit + 1))).scalars())
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return Page(
        items=[to_public(s) for s in rows[:limit]],
        next_cursor=encode_cursor([(last.name or "").lower(), str(last.id)]) if last else None,
    )
