"""The auditor pages' sessions, server-side (the tokens themselves: app.web.session).

Each session is a row holding a SHA-256 hash of its cookie's token, never the token. A
cookie is honoured only while its row is live: not ended (logout, revocation), not
expired, not idle for `IDLE_MINUTES`, and, for a session opened with an API key, while
that key is unrevoked. A session opened from a report link also holds the link's hash:
revoking the session refuses the link from then on (`revoke_link` also refuses a link
nobody has opened yet, with a row ended before it started). Rows are deleted
`KEEP_DAYS` after they expired, long after any link they refuse has expired (a link lives
at most a day).

Nothing here commits: the request, or the command line, owns the commit point.
"""

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from app.models.api_key import ApiKey
from app.models.page_session import PageSession
from app.services.audit import entries as audit

IDLE_MINUTES = 30
KEEP_DAYS = 30
LISTED = ("id", "opened", "role", "name", "created_at", "expires_at", "last_seen_at",
          "ended_at", "ended_by")  # fmt: skip


def token_hash(token: str) -> str:
    """What the table stores of a token (tokens are signed and carry a random nonce)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(
    session: AsyncSession,
    *,
    token: str,
    role: str,
    name: str,
    expires: datetime,
    api_key_id: uuid.UUID | None = None,
    link_token: str | None = None,
) -> uuid.UUID:
    """Record a new session: opened with an API key (`api_key_id`), a link (`link_token`),
    or a console link, which names its key and so carries both: revoking that key ends
    the session like any other of the key's."""
    if api_key_id is None and link_token is None:
        raise ValueError("a page session is opened with an API key or a link")
    await session.execute(
        delete(PageSession).where(
            col(PageSession.expires_at) < func.now() - timedelta(days=KEEP_DAYS)
        )
    )
    return (
        await session.execute(
            insert(PageSession)
            .values(
                id=uuid.uuid4(),
                token_hash=token_hash(token),
                opened=_opened(api_key_id, link_token),
                role=role,
                name=name,
                api_key_id=api_key_id,
                link_hash=token_hash(link_token) if link_token is not None else None,
                created_at=func.now(),
                expires_at=expires,
                last_seen_at=func.now(),
            )
            .returning(col(PageSession.id))
        )
    ).scalar_one()


def _opened(api_key_id: uuid.UUID | None, link_token: str | None) -> str:
    if link_token is None:
        return "login"
    return "link" if api_key_id is None else "key_link"


async def link_refused(session: AsyncSession, link_token: str) -> bool:
    """Whether a session of this link has been revoked (or the link itself, unopened)."""
    return bool(
        await session.scalar(
            select(
                exists().where(
                    col(PageSession.link_hash) == token_hash(link_token),
                    col(PageSession.ended_by) == "revoke",
                )
            )
        )
    )


async def live(session: AsyncSession, token: str) -> Any:
    """(id, opened, role, name, api_key_id) of the live session of this cookie, or None;
    marks it seen (one statement: the check and the touch)."""
    key_live = exists().where(
        col(ApiKey.id) == col(PageSession.api_key_id), col(ApiKey.revoked_at).is_(None)
    )
    return (
        await session.execute(
            update(PageSession)
            .where(
                col(PageSession.token_hash) == token_hash(token),
                col(PageSession.ended_at).is_(None),
                col(PageSession.expires_at) > func.now(),
                col(PageSession.last_seen_at) > func.now() - timedelta(minutes=IDLE_MINUTES),
                or_(col(PageSession.api_key_id).is_(None), key_live),
            )
            .values(last_seen_at=func.now())
            .returning(
                col(PageSession.id),
                col(PageSession.opened),
                col(PageSession.role),
                col(PageSession.name),
                col(PageSession.api_key_id),
            )
        )
    ).first()


async def end(session: AsyncSession, token: str) -> bool:
    """Logout: the session of this cookie ends; replaying the cookie no longer works."""
    ended = await session.execute(
        update(PageSession)
        .where(
            col(PageSession.token_hash) == token_hash(token), col(PageSession.ended_at).is_(None)
        )
        .values(ended_at=func.now(), ended_by="logout")
        .returning(col(PageSession.id))
    )
    return ended.first() is not None


async def _revoked(session: AsyncSession, rows: Any) -> list[uuid.UUID]:
    ids = []
    for row in rows:
        ids.append(row.id)
        await audit.record(
            session, None, "page_session.revoke", "page_session", row.id, opened=row.opened
        )
    return ids


def _revoke(*where: Any) -> Any:
    """Ends the sessions (an ended one keeps its end time) and marks them revoked, which
    refuses the links that opened them."""
    return (
        update(PageSession)
        .where(*where)
        .values(ended_at=func.coalesce(col(PageSession.ended_at), func.now()), ended_by="revoke")
        .returning(col(PageSession.id), col(PageSession.opened))
    )


async def revoke(session: AsyncSession, *, session_id: uuid.UUID) -> list[uuid.UUID]:
    """End one session; if a link opened it, refuse the link and end every session it
    opened (the link is the credential). The ids revoked, none if there was nothing to."""
    target = aliased(PageSession)
    its_link = select(col(target.link_hash)).where(col(target.id) == session_id)
    rows = await session.execute(
        _revoke(
            or_(
                col(PageSession.id) == session_id,
                col(PageSession.link_hash) == its_link.scalar_subquery(),
            ),
            col(PageSession.ended_by).is_distinct_from("revoke"),
        )
    )
    return await _revoked(session, rows)


async def revoke_all(session: AsyncSession) -> list[uuid.UUID]:
    """End every session, and refuse every link that opened one (even a session already
    ended by logout or expiry: its link may still be within its own lifetime)."""
    rows = await session.execute(
        _revoke(
            or_(
                col(PageSession.ended_at).is_(None),
                col(PageSession.link_hash).is_not(None),
            ),
            col(PageSession.ended_by).is_distinct_from("revoke"),
        )
    )
    return await _revoked(session, rows)


async def revoke_link(
    session: AsyncSession, *, link_token: str, role: str, name: str, expires: datetime
) -> list[uuid.UUID]:
    """Refuse a link (its signature already checked by the caller) and end every session it
    opened. A link nobody opened yet gets a row ended before it started, to refuse it."""
    link = token_hash(link_token)
    if await link_refused(session, link_token):
        return []
    rows = await session.execute(_revoke(col(PageSession.link_hash) == link))
    ids = await _revoked(session, rows)
    if ids:
        return ids
    marker = (
        await session.execute(
            insert(PageSession)
            .values(
                id=uuid.uuid4(),
                token_hash=link,  # no cookie was ever issued: nothing can match it
                opened="link",
                role=role,
                name=name,
                link_hash=link,
                created_at=func.now(),
                expires_at=expires,
                last_seen_at=func.now(),
                ended_at=func.now(),
                ended_by="revoke",
            )
            .returning(col(PageSession.id), col(PageSession.opened))
        )
    ).all()
    return await _revoked(session, marker)


async def list_sessions(session: AsyncSession, *, ended: bool = False) -> list[dict[str, Any]]:
    """Live sessions, newest first; with `ended`, also those ended or expired (kept
    `KEEP_DAYS`). Never a hash."""
    query = select(*(col(getattr(PageSession, name)) for name in LISTED)).order_by(
        col(PageSession.created_at).desc()
    )
    if not ended:
        query = query.where(
            col(PageSession.ended_at).is_(None),
            col(PageSession.expires_at) > func.now(),
            col(PageSession.last_seen_at) > func.now() - timedelta(minutes=IDLE_MINUTES),
        )
    return [dict(row._mapping) for row in await session.execute(query)]
