"""What we hold about a person and why (Art 15), and what they gave us, portable (Art 20)."""

from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.base import LONDON, utcnow
from app.models.rights import RightsRequest
from app.models.subject import PERSONAL_FIELDS, Subject
from app.services.catalogue import controller as controller_identity
from app.services.consent import reading as consent_reading
from app.services.retention import rules as retention_rules
from app.services.retention.due import subject_due_at
from app.services.subjects import records as subjects

RIGHTS = [
    "access: a copy of your personal data and how it is used (Art 15)",
    "rectification of inaccurate data (Art 16)",
    "erasure where there is no longer a lawful ground (Art 17)",
    "restriction of processing (Art 18)",
    "portability of data you provided, where processing rests on consent or contract (Art 20)",
    "objection to processing on legitimate interests (Art 21(1))",
    "objection to direct marketing, at any time (Art 21(2))",
    "withdrawal of consent at any time (Art 7(3))",
]
PORTABLE_BASES = ("consent", "contract")


async def _rows(session: AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in (await session.execute(text(sql), params)).all()]


async def _retention(session: AsyncSession, subject: Subject) -> dict[str, Any]:
    """The rule and the date it ends: the same SQL function as the gate and the sweep."""
    row = await subject_due_at(
        session, subject.id, now=utcnow(), grace_days=retention_rules.grace_days()
    )
    until = row.due_at.astimezone(LONDON).date().isoformat() if row.due_at else None
    return {"rule": row.rule, "months": row.months, "until": until}


def _no_data_held(base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "held": False,
        "message": "We hold no personal data about you beyond any opt-out listed here.",
    }


async def _common_part(session: AsyncSession, req: RightsRequest) -> dict[str, Any]:
    """What every report carries, held or not: who we are, the rights, any opt-outs."""
    controller = await controller_identity.shown(session)
    return {
        "controller": controller,
        "right_to_complain": f"You may complain to the {controller['supervisory_authority']}.",
        "your_rights": RIGHTS,
        "opt_outs": await _rows(
            session,
            "SELECT channel, source, created_at FROM marketing_optouts"
            " WHERE email_hash = :h ORDER BY created_at",
            h=req.email_hash,
        ),
    }


async def _purposes(session: AsyncSession, subject: Subject) -> list[dict[str, Any]]:
    return await _rows(
        session,
        "SELECT b.purpose, p.description, b.basis, b.contract_ref, b.contract_start,"
        " b.contract_end, b.lia_ref, b.obligation,"
        " ARRAY(SELECT r.name FROM recipients r WHERE b.purpose = ANY(r.purposes)"
        "       ORDER BY r.name) AS recipients"
        " FROM lawful_bases b JOIN purposes p ON p.key = b.purpose"
        " WHERE b.subject_id = :s ORDER BY b.purpose",
        s=subject.id,
    )


async def _consent_history(session: AsyncSession, subject: Subject) -> list[dict[str, Any]]:
    return [
        {
            "event_id": str(e.id),
            "purpose": e.purpose,
            "action": e.action,
            "method": e.method,
            "occurred_at": e.occurred_at.isoformat(),
            "receipt": receipt,
        }
        for e, receipt in await consent_reading.history_with_receipts(
            session, subject_id=subject.id
        )
    ]


async def _recent_decisions(
    session: AsyncSession, req: RightsRequest, subject: Subject
) -> list[dict[str, Any]]:
    """Gate decisions in the twelve months before the request was received (on this subject
    and on any merged into it)."""
    since = req.received_at - timedelta(days=365)
    return await _rows(
        session,
        "SELECT purpose, recipient, allowed, reasons, decided_at FROM decisions"  # noqa: S608
        f" WHERE subject_id IN ({subjects.LINKED_IDS}) AND decided_at >= :since"
        " ORDER BY decided_at",
        s=subject.id,
        since=since,
    )


async def _recipients(session: AsyncSession, subject: Subject) -> list[dict[str, Any]]:
    return await _rows(
        session,
        "SELECT DISTINCT r.name, r.role, r.country, r.inside_eea_uk,"
        " r.transfer_safeguard FROM recipients r JOIN lawful_bases b"
        " ON b.purpose = ANY(r.purposes) WHERE b.subject_id = :s ORDER BY r.name",
        s=subject.id,
    )


async def _merged_records(session: AsyncSession, subject: Subject) -> list[dict[str, Any]]:
    """The same person held twice: what each subject merged into this one still holds."""
    ids = (await subjects.linked_ids(session, subject.id))[1:]
    merged = [await session.get(Subject, i) for i in ids]
    return [
        {
            "subject_id": str(m.id),
            "merged_at": m.merged_at,
            **{f: getattr(m, f) for f in PERSONAL_FIELDS},
        }
        for m in merged
        if m is not None
    ]


async def _source(session: AsyncSession, subject: Subject) -> dict[str, Any]:
    source = (
        await session.execute(
            text("SELECT key, description FROM sources WHERE key = :k"), {"k": subject.source}
        )
    ).one()
    return {
        "key": source.key,
        "description": source.description,
        "detail": subject.source_detail,
    }


async def access_report(
    session: AsyncSession, req: RightsRequest, subject: Subject | None
) -> dict[str, Any]:
    base = await _common_part(session, req)
    if subject is None:
        return _no_data_held(base)
    # Awaited one by one, in this order: the session runs one statement at a time.
    purposes = await _purposes(session, subject)
    history = await _consent_history(session, subject)
    decisions = await _recent_decisions(session, req, subject)
    recipients = await _recipients(session, subject)
    source = await _source(session, subject)
    merged = await _merged_records(session, subject)
    return {
        **base,
        "held": True,
        "data": {f: getattr(subject, f) for f in PERSONAL_FIELDS},
        "category": subject.category,
        "source": source,
        "status": "restricted" if subject.restricted else "active",
        "purposes": purposes,
        "consent_history": history,
        "decisions_last_12_months": decisions,
        "recipients": recipients,
        "retention": await _retention(session, subject),
        "merged_records": merged,
    }


async def portable_data(session: AsyncSession, subject: Subject | None) -> dict[str, Any]:
    """The fields the person provided, for purposes resting on consent or contract only."""
    if subject is None:
        return {"data": None, "included_purposes": [], "refused": "We hold no data about you."}
    bases = (
        await session.execute(
            text("SELECT purpose, basis FROM lawful_bases WHERE subject_id = :s ORDER BY purpose"),
            {"s": subject.id},
        )
    ).all()
    included = [b.purpose for b in bases if b.basis in PORTABLE_BASES]
    excluded = [b.purpose for b in bases if b.basis not in PORTABLE_BASES]
    refused = None
    if not included:
        refused = "Art 20(1)(a): no purpose rests on consent or contract, so nothing is portable."
    elif excluded:
        refused = (
            "Art 20(1)(a): portability covers processing based on consent or contract; "
            f"not included for: {', '.join(excluded)}."
        )
    data = {f: getattr(subject, f) for f in PERSONAL_FIELDS} if included else None
    return {"data": data, "included_purposes": included, "refused": refused}
