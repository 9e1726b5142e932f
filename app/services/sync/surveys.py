"""The SurveyMonkey side of sync, in the database: a contact's opt-out in SurveyMonkey taken
as its person's no to the purpose the list serves, and each contact judged by the gate.

The gate is the only rule: a contact is kept exactly when the gate allows its subject. A
SurveyMonkey opt-out therefore reaches the gate through the ledgers the gate reads, never
through a rule of the sync's own: a withdrawal of consent where the subject's basis for the
purpose is consent, an objection (Art 21(1)) otherwise. A marketing opt-out removes a
contact only while the purpose is direct marketing in the catalogue (the gate's rule 8)."""

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.crypto import email_hash
from app.core.errors import Conflict, NotFound
from app.models.consent import ConsentEventCreate, ConsentMethod, EvidenceCreate
from app.services.audit import entries as audit
from app.services.consent import events as consent
from app.services.gate import decisions
from app.services.optouts import objections

SOURCE = "surveymonkey"
# How the person said no: SurveyMonkey's opt-out link is in its invitation e-mails.
METHOD: ConsentMethod = "email"
EVIDENCE_PREFIX = "surveymonkey-optout:"

# The live subjects behind opted-out contacts (by the e-mail's keyed hash), each with its
# basis for the purpose and whether this contact's opt-out is already in the consent ledger
# (the evidence names the contact: a re-read records nothing twice).
OPTED_OUT = text("""
SELECT c.ord, s.id, s.email_hash, b.basis,
  EXISTS (SELECT 1 FROM consent_events e
          WHERE e.subject_id = s.id AND e.purpose = CAST(:p AS text)
            AND e.action = 'withdrawn' AND e.form_id = c.form_id) AS withdrawn_here
FROM unnest(CAST(:h AS text[]), CAST(:f AS text[])) WITH ORDINALITY AS c(email_hash, form_id, ord)
JOIN subjects s ON s.email_hash = c.email_hash AND s.erased_at IS NULL
LEFT JOIN lawful_bases b ON b.subject_id = s.id AND b.purpose = CAST(:p AS text)
ORDER BY c.ord
""")


@dataclass
class Verdict:
    contact_id: str
    subject_id: uuid.UUID | None
    keep: bool


@dataclass
class OptOuts:
    """What one page of SurveyMonkey opt-outs did."""

    withdrawn: int = 0  # consents withdrawn (basis consent)
    objected: int = 0  # objections recorded (any other basis, or none)
    unknown: int = 0  # addresses of no live subject: nothing to record, left alone
    verdicts: list[Verdict] = field(default_factory=list)  # the gate's answer, afterwards


def evidence_id(contact_id: str) -> str:
    """The withdrawal's `form_id`: SurveyMonkey and the contact whose status said no."""
    return EVIDENCE_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "", contact_id)[:100]


def _address(email: str) -> str | None:
    email = email.strip().lower()
    return email if "@" in email and len(email) <= 254 else None


async def take_optouts(
    session: AsyncSession,
    principal: Principal,
    contacts: list[tuple[str, str]],
    *,
    purpose: str,
    recipient: str | None,
) -> OptOuts:
    """SurveyMonkey contacts with status `optout` (id, e-mail): each one's person said no to
    `purpose`. Recorded once, through the ledgers' own write paths (audited, in the change
    feed): a withdrawal of consent where the basis is consent, else an objection (which
    the gate applies under legitimate interests). Then the gate judges each of them."""
    result = OptOuts()
    named = [(cid, _address(e)) for cid, e in contacts]
    wanted = [(cid, e) for cid, e in named if e is not None]
    result.unknown = len(named) - len(wanted)
    if not wanted:
        return result
    rows = await _opted_out_subjects(session, wanted, purpose)
    result.unknown += len(wanted) - len(rows)
    judged: list[tuple[str, uuid.UUID]] = []
    for row in rows:
        cid = wanted[row.ord - 1][0]
        await _record_optout(session, principal, row, cid, purpose, result)
        judged.append((cid, row.id))
    if judged:
        result.verdicts = await _judge_subjects(session, principal, judged, purpose, recipient)
    return result


async def _opted_out_subjects(
    session: AsyncSession, wanted: list[tuple[str, str]], purpose: str
) -> Sequence[Row[Any]]:
    """OPTED_OUT's rows for the (contact id, address) pairs, in their order (`ord`, 1-based)."""
    return (
        await session.execute(
            OPTED_OUT,
            {
                "p": purpose,
                "h": [email_hash(e) for _, e in wanted],
                "f": [evidence_id(cid) for cid, _ in wanted],
            },
        )
    ).all()


async def _record_optout(
    session: AsyncSession,
    principal: Principal,
    row: Row[Any],
    cid: str,
    purpose: str,
    result: OptOuts,
) -> None:
    """One opted-out subject's no, counted in `result`: a withdrawal where the basis is
    consent (unless this contact's is already recorded), else an objection, audited."""
    if row.basis == "consent":
        if not row.withdrawn_here and await _withdraw(session, principal, row.id, cid, purpose):
            result.withdrawn += 1
    elif await objections.record(session, row, [purpose], source=SOURCE):
        result.objected += 1
        await audit.record(
            session,
            principal,
            "objection.create",
            "objection",
            row.id,
            purpose=purpose,
            source=SOURCE,
            basis=row.basis,
            contact=evidence_id(cid),
        )


async def _judge_subjects(
    session: AsyncSession,
    principal: Principal,
    judged: list[tuple[str, uuid.UUID]],
    purpose: str,
    recipient: str | None,
) -> list[Verdict]:
    """The gate's answer for each (contact id, subject id), in order."""
    items = await decisions.decide_batch(
        session,
        principal,
        subjects=[sid for _, sid in judged],
        purpose=purpose,
        recipient=recipient,
    )
    return [
        Verdict(cid, item.subject_id, item.allowed)
        for (cid, _), item in zip(judged, items, strict=True)
    ]


async def _withdraw(
    session: AsyncSession, principal: Principal, subject_id: uuid.UUID, cid: str, purpose: str
) -> bool:
    """The consent ledger's one write path (event, state, change feed, audit)."""
    data = ConsentEventCreate(
        subject_id=subject_id,
        purpose=purpose,
        action="withdrawn",
        method=METHOD,
        evidence=EvidenceCreate(form_id=evidence_id(cid)),
    )
    try:
        await consent.record_consent(session, principal, data=data)
    except (Conflict, NotFound):  # erased since the lookup: nothing left to withdraw
        return False
    return True


async def judge_contacts(
    session: AsyncSession,
    principal: Principal,
    contacts: list[tuple[str, str]],
    *,
    purpose: str,
    recipient: str | None,
) -> list[Verdict]:
    """Keep a contact exactly when the gate allows its subject now: no rule of our own (a
    marketing opt-out counts where the gate counts it, for a direct-marketing purpose). An
    address that is no subject of ours is denied (`subject_unknown`) like any other."""
    if not contacts:
        return []
    emails = [e.strip().lower() for _, e in contacts]
    items = await decisions.decide_batch(
        session, principal, subjects=emails, purpose=purpose, recipient=recipient
    )
    return [
        Verdict(cid, item.subject_id, item.allowed)
        for (cid, _), item in zip(contacts, items, strict=True)
    ]
