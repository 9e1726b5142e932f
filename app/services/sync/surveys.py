"""The SurveyMonkey side of sync, in the database: its opt-outs imported, and each contact
of the survey list judged by the gate (and the opt-out register)."""

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.crypto import email_hash
from app.services import decisions, optouts


@dataclass
class Verdict:
    contact_id: str
    subject_id: uuid.UUID | None
    keep: bool


async def import_optouts(session: AsyncSession, principal: Principal, emails: list[str]) -> int:
    """SurveyMonkey contacts with status `optout` become opt-outs; returns how many were new."""
    new = 0
    for email in emails:
        if "@" not in email or len(email) > 254:
            continue
        _, created = await optouts.record_optout_hash(
            session,
            principal,
            email_hash=email_hash(email),
            channel="email",
            source="surveymonkey",
            reason="opted out in SurveyMonkey",
        )
        new += created
    return new


async def judge_contacts(
    session: AsyncSession,
    principal: Principal,
    contacts: list[tuple[str, str]],
    *,
    purpose: str,
    recipient: str | None,
) -> list[Verdict]:
    """Keep a contact only if the gate allows its subject now and its address has no opt-out.
    An address that is no subject of ours is denied (`subject_unknown`) like any other."""
    if not contacts:
        return []
    emails = [e.strip().lower() for _, e in contacts]
    items = await decisions.decide_batch(
        session, principal, subjects=emails, purpose=purpose, recipient=recipient
    )
    opted = set(
        (
            await session.execute(
                text(
                    "SELECT email_hash FROM marketing_optouts"
                    " WHERE email_hash = ANY(CAST(:h AS text[]))"
                ),
                {"h": [email_hash(e) for e in emails]},
            )
        ).scalars()
    )
    return [
        Verdict(cid, item.subject_id, item.allowed and email_hash(email) not in opted)
        for (cid, _), email, item in zip(contacts, emails, items, strict=True)
    ]
