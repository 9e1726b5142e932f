"""Erasure (Art 17): personal fields removed everywhere, a tombstone and the opt-out hashes
kept; refused in part where a running contract or a legal obligation still needs the data
(Art 17(3)(b)), saying which purposes block it."""

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.models.base import utcnow
from app.models.subject import Subject
from app.services import audit

BLOCKING = text("""
SELECT purpose, basis, contract_ref, contract_end, obligation FROM lawful_bases
WHERE subject_id = :s AND (basis = 'legal_obligation' OR (basis = 'contract'
  AND (contract_start IS NULL OR contract_start <= now())
  AND (contract_end IS NULL OR contract_end > now())))
ORDER BY purpose
""")

ERASE_SUBJECT = text("""
UPDATE subjects SET email = NULL, email_hash = NULL, name = NULL, phone = NULL, mobile = NULL,
  job_title = NULL, company = NULL, business_address = NULL, source_detail = NULL,
  restricted = false, erased_at = now(), updated_at = now()
WHERE id = :s
""")
ERASE_EVIDENCE = text(
    "UPDATE consent_events SET form_id = NULL, page_url = NULL, user_agent = NULL"
    " WHERE subject_id = :s"
)
ERASE_NOTES = [
    text("UPDATE lawful_bases SET note = NULL WHERE subject_id = :s"),
    text(
        "UPDATE lawful_basis_history SET"
        " value = CASE WHEN jsonb_typeof(value) = 'object' THEN value - 'note' ELSE value END,"
        " previous = CASE WHEN jsonb_typeof(previous) = 'object' THEN previous - 'note'"
        " ELSE previous END WHERE subject_id = :s"
    ),
]


async def forget_requests(
    session: AsyncSession, email_hash: str | None, subject_id: uuid.UUID | None
) -> None:
    """The person's rights requests keep their dates and outcome, not their contents."""
    await session.execute(
        text(
            "UPDATE rights_request_events SET detail = detail - 'private'"
            " WHERE jsonb_typeof(detail) = 'object' AND request_id IN"
            " (SELECT id FROM rights_requests WHERE subject_id = :s OR email_hash = :h)"
        ),
        {"s": subject_id, "h": email_hash},
    )
    await session.execute(
        text(
            "UPDATE rights_requests SET email = NULL, details = NULL,"
            " result = CASE WHEN result IS NULL THEN NULL"
            "   ELSE jsonb_build_object('outcome', result -> 'outcome') END"
            " WHERE subject_id = :s OR email_hash = :h"
        ),
        {"s": subject_id, "h": email_hash},
    )


async def _forget_stored_answers(session: AsyncSession, subject: Subject) -> None:
    # Idempotency replays store whole responses, which may echo the subject's fields.
    await session.execute(
        text(
            "DELETE FROM idempotency_keys WHERE strpos(body::text, :id) > 0"
            " OR (CAST(:email AS text) IS NOT NULL AND strpos(lower(body::text), :email) > 0)"
        ),
        {"id": str(subject.id), "email": subject.email},
    )


async def erase_subject(
    session: AsyncSession, principal: Principal, subject: Subject
) -> dict[str, Any]:
    blocking = list((await session.execute(BLOCKING, {"s": subject.id})).all())
    if blocking:
        return await _erase_in_part(session, principal, subject, blocking)
    email_hash = subject.email_hash
    await _forget_stored_answers(session, subject)
    for stmt in (ERASE_SUBJECT, ERASE_EVIDENCE, *ERASE_NOTES):
        await session.execute(stmt, {"s": subject.id})
    await forget_requests(session, email_hash, subject.id)
    await session.refresh(subject)
    await audit.record(session, principal, "subject.erase", "subject", subject.id, partial=False)
    return {
        "erased": True,
        "erased_at": subject.erased_at.isoformat() if subject.erased_at else None,
    }


async def _erase_in_part(
    session: AsyncSession, principal: Principal, subject: Subject, blocking: list[Any]
) -> dict[str, Any]:
    """Keep what a running contract or a legal obligation needs; end every other purpose."""
    kept = {r.purpose for r in blocking}
    ended = list(
        (
            await session.execute(
                text(
                    "DELETE FROM lawful_bases WHERE subject_id = :s AND NOT (purpose = ANY(:kept))"
                    " RETURNING purpose"
                ),
                {"s": subject.id, "kept": sorted(kept)},
            )
        ).scalars()
    )
    for purpose in ended:
        await session.execute(
            text(
                "INSERT INTO lawful_basis_history (subject_id, purpose, action, value, previous,"
                " actor, at) VALUES (:s, :p, 'ended', NULL, NULL, :a, :t)"
            ),
            {"s": subject.id, "p": purpose, "a": f"erasure by {principal.name}", "t": utcnow()},
        )
    await session.execute(ERASE_EVIDENCE, {"s": subject.id})
    retained = [
        {
            "purpose": r.purpose,
            "basis": r.basis,
            "why": (
                f"contract {r.contract_ref} is running"
                if r.basis == "contract"
                else f"legal obligation: {r.obligation}"
            ),
        }
        for r in blocking
    ]
    await audit.record(
        session,
        principal,
        "subject.erase",
        "subject",
        subject.id,
        partial=True,
        retained_for=sorted(kept),
        ended=sorted(ended),
    )
    return {
        "erased": False,
        "partial": True,
        "article": "17(3)(b)",
        "retained_for": retained,
        "ended_purposes": sorted(ended),
    }
