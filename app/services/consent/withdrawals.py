"""Withdrawing every consent a subject has given (a rights request to withdraw consent, or
the part of an erasure that can be done): one event per consent, through the one write."""

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.driver import connection_of
from app.models.base import utcnow
from app.services.catalogue import entries as catalogue
from app.services.consent import events


async def withdraw_all(
    session: AsyncSession, principal: Principal, *, subject: Any, purposes: list[str] | None
) -> list[str]:
    """Withdraw every consent given (for the named purposes, or all), effective at once."""
    if purposes:
        await catalogue.require_purposes(session, purposes)
    rows = (
        await session.execute(
            text(
                "SELECT purpose, nullif(recipient, '') AS recipient FROM consent_state"
                " WHERE subject_id = :s AND status = 'given'"
                " AND (CAST(:p AS text[]) IS NULL OR purpose = ANY(CAST(:p AS text[])))"
                " ORDER BY purpose, recipient"
            ),
            {"s": subject.id, "p": purposes},
        )
    ).all()
    ctx = events.Context(subject.id, subject.email_hash, "", False, None, [])
    driver = await connection_of(session)
    for row in rows:
        await events.write_event(
            driver,
            principal,
            ctx,
            purpose=row.purpose,
            recipient=row.recipient,
            action="withdrawn",
            method="rights_request",
            policy=None,
            notice_text=None,
            evidence=None,
            occurred_at=utcnow(),
        )
    return [r.purpose if r.recipient is None else f"{r.purpose}:{r.recipient}" for r in rows]
