"""Erasure (Art 17): personal fields removed everywhere, a tombstone and the opt-out hashes
kept; refused in part where a running contract still needs the data (no ground of Art 17(1)
applies: `17(1)(a)`) or a legal obligation requires it (`17(3)(b)`), naming per purpose kept
the article."""

import re
import uuid
from typing import Any

from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.auth import Principal
from app.models.rights import RightsRequest
from app.models.subject import Subject
from app.services.audit import entries as audit
from app.services.bases import records as bases
from app.services.changes import clock
from app.services.consent import withdrawals
from app.services.optouts import objections

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
    # Addresses a MailChimp `upemail` event named for this subject.
    text("UPDATE mailchimp_events SET old_email = NULL, new_email = NULL WHERE subject_id = :s"),
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
            "UPDATE rights_requests SET email = NULL, details = NULL, identity_note = NULL,"
            " extension_reason = NULL, rejection_reason = NULL,"
            " result = CASE WHEN result IS NULL THEN NULL"
            "   ELSE jsonb_build_object('outcome', result -> 'outcome') END"
            " WHERE subject_id = :s OR email_hash = :h"
        ),
        {"s": subject_id, "h": email_hash},
    )


# Access and portability reports are copies of what was held; once a field is rectified or
# erased, a stored copy would keep the superseded value readable. The copy goes, the outcome
# (no personal data) stays, and the export then asks for a new request.
WITHDRAW_REPORTS = text("""
UPDATE rights_requests
SET result = jsonb_build_object('outcome', result -> 'outcome',
                                'report_withdrawn', CAST(:why AS text))
WHERE (subject_id = :s OR email_hash = ANY (CAST(:hashes AS text[])))
  AND jsonb_typeof(result) = 'object' AND result ? 'report'
""")


async def forget_superseded_values(
    session: AsyncSession, subject: Subject, *, old: dict[str, Any], old_email_hash: str | None
) -> None:
    """Rectification (Art 16): no stored report, free text or reply keeps the old values."""
    hashes = [h for h in (subject.email_hash, old_email_hash) if h]
    await session.execute(
        WITHDRAW_REPORTS, {"s": subject.id, "hashes": hashes, "why": "rectification"}
    )
    if "email" in old:  # the requests keep the address they came from only as its hash
        await session.execute(
            update(RightsRequest)
            .where(
                or_(
                    col(RightsRequest.subject_id) == subject.id,
                    col(RightsRequest.email_hash).in_(hashes),
                )
            )
            .values(email=None)
        )
    values = sorted({str(v) for v in old.values() if v is not None and len(str(v)) >= 3})
    if values:
        pattern = re.compile("|".join(re.escape(v) for v in values), re.IGNORECASE)
        rows = await session.execute(
            select(col(RightsRequest.id), col(RightsRequest.details)).where(
                or_(
                    col(RightsRequest.subject_id) == subject.id,
                    col(RightsRequest.email_hash).in_(hashes),
                ),
                col(RightsRequest.details).is_not(None),
            )
        )
        for request_id, details in rows.all():
            scrubbed = pattern.sub("[rectified]", details or "")
            if scrubbed != details:
                await session.execute(
                    update(RightsRequest)
                    .where(col(RightsRequest.id) == request_id)
                    .values(details=scrubbed)
                )
    await forget_stored_answers(session, subject, old_email=old.get("email"))


async def forget_stored_answers(
    session: AsyncSession, subject: Subject, *, old_email: str | None = None
) -> None:
    """Idempotency replays store whole responses, which may echo the subject's fields."""
    emails = [e for e in (subject.email, old_email) if e]
    await session.execute(
        text(
            "DELETE FROM idempotency_keys WHERE strpos(body::text, :id) > 0"
            " OR EXISTS (SELECT 1 FROM unnest(CAST(:emails AS text[])) e"
            "            WHERE strpos(lower(body::text), e) > 0)"
        ),
        {"id": str(subject.id), "emails": emails},
    )


async def erase_subject(
    session: AsyncSession, principal: Principal, subject: Subject
) -> dict[str, Any]:
    """Erase the subject, and with it every subject merged into it (the same person's
    other record: its reads were the survivor's, so is its erasure)."""
    outcome = await _erase_one(session, principal, subject)
    merged = (
        await session.execute(
            select(Subject)
            .where(col(Subject.merged_into) == subject.id, col(Subject.erased_at).is_(None))
            .order_by(col(Subject.id))
            .with_for_update()
        )
    ).scalars()
    erased_with = [str(other.id) for other in merged]
    for other_id in erased_with:
        other = await session.get(Subject, uuid.UUID(other_id))
        if other is not None:
            await erase_subject(session, principal, other)
    if erased_with:
        outcome["merged_subjects"] = erased_with
    return outcome


async def _erase_one(
    session: AsyncSession, principal: Principal, subject: Subject
) -> dict[str, Any]:
    blocking = list((await session.execute(BLOCKING, {"s": subject.id})).all())
    if blocking:
        return await _erase_in_part(session, principal, subject, blocking)
    email_hash = subject.email_hash
    await forget_stored_answers(session, subject)
    for stmt in (ERASE_SUBJECT, ERASE_EVIDENCE, *ERASE_NOTES):
        await session.execute(stmt, {"s": subject.id})
    await forget_requests(session, email_hash, subject.id)
    await clock.schedule(session, [subject.id])  # an erased subject has no moment left
    # The opt-out itself stays (as a keyed hash); its free-text reason may name the person.
    await session.execute(
        text("UPDATE marketing_optouts SET reason = NULL WHERE email_hash = :h"), {"h": email_hash}
    )
    await session.refresh(subject)
    await audit.record(session, principal, "subject.erase", "subject", subject.id, partial=False)
    return {
        "erased": True,
        "erased_at": subject.erased_at.isoformat() if subject.erased_at else None,
    }


async def _purposes_not_kept(session: AsyncSession, kept: list[str]) -> list[str]:
    """Every catalogue purpose outside `kept`, whether the subject has a basis for it or not."""
    return list(
        (
            await session.execute(
                text("SELECT key FROM purposes WHERE NOT (key = ANY(:kept)) ORDER BY key"),
                {"kept": kept},
            )
        ).scalars()
    )


async def _bases_not_kept(session: AsyncSession, subject: Subject, kept: list[str]) -> list[str]:
    return list(
        (
            await session.execute(
                text(
                    "SELECT purpose FROM lawful_bases WHERE subject_id = :s"
                    " AND NOT (purpose = ANY(:kept)) ORDER BY purpose"
                ),
                {"s": subject.id, "kept": kept},
            )
        ).scalars()
    )


# Why a purpose is kept, and the article cited (DOMAIN.md "Rights requests"): data a running
# contract still needs is necessary for its purpose, so the ground of Art 17(1)(a) does not
# apply; a legal obligation to keep it is the exemption of Art 17(3)(b).
KEPT_BECAUSE = {
    "contract": ("a running contract", "17(1)(a)"),
    "legal_obligation": ("a legal obligation", "17(3)(b)"),
}


def _retained(blocking: list[Any]) -> list[dict[str, Any]]:
    # Basis and purpose only: the contract reference or obligation text stays in the CRM,
    # out of the outcome and the (unerasable) audit chain.
    return [
        {
            "purpose": r.purpose,
            "basis": r.basis,
            "why": KEPT_BECAUSE[r.basis][0],
            "article": KEPT_BECAUSE[r.basis][1],
        }
        for r in blocking
    ]


def _articles(retained: list[dict[str, Any]]) -> str:
    """The outcome's summary `article` (kept for its readers): every article the purposes
    kept cite, once each, in the order of the Regulation."""
    return ", ".join(sorted({r["article"] for r in retained}))


async def _erase_in_part(
    session: AsyncSession, principal: Principal, subject: Subject, blocking: list[Any]
) -> dict[str, Any]:
    """Keep what a running contract or a legal obligation needs; end every other purpose,
    and make the end stick: consents are withdrawn and objections recorded, so that
    re-recording a basis later does not quietly resume the processing."""
    kept = sorted({r.purpose for r in blocking})
    others = await _purposes_not_kept(session, kept)
    ended = await _bases_not_kept(session, subject, kept)
    for purpose in ended:
        await bases.end_basis(session, principal, subject_id=subject.id, purpose=purpose)
    await withdrawals.withdraw_all(session, principal, subject=subject, purposes=others)
    await objections.record(session, subject, others, source="erasure")
    await session.execute(ERASE_EVIDENCE, {"s": subject.id})
    retained = _retained(blocking)
    await audit.record(
        session,
        principal,
        "subject.erase",
        "subject",
        subject.id,
        partial=True,
        retained_for=kept,
        ended=ended,
    )
    return {
        "erased": False,
        "partial": True,
        "article": _articles(retained),
        "retained_for": retained,
        "ended_purposes": ended,
    }
