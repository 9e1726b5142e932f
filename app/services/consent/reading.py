"""Reading the consent ledger: events as the API shows them, the current state per purpose,
and receipts."""

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.pagination import Page, decode_time_cursor, encode_time_cursor, page_of
from app.models.consent import (
    Confirmation,
    ConsentEventPublic,
    ConsentStatePublic,
    Evidence,
)
from app.services.catalogue import controller as controller_identity
from app.services.consent.receipts import build_receipt
from app.services.subjects import records as subjects


def event_document(row: Any) -> dict[str, Any]:
    """An event as ConsentEventPublic serialises it (same fields, same order)."""
    return {
        "id": row.id,
        "subject_id": row.subject_id,
        "purpose": row.purpose,
        "recipient": row.recipient,
        "action": row.action,
        "method": row.method,
        "policy_version": row.policy_version,
        "notice_sha256": row.notice_sha256,
        "evidence": {
            "form_id": row.form_id,
            "page_url": row.page_url,
            "user_agent": row.user_agent,
        },
        "occurred_at": row.occurred_at,
        "recorded_at": row.recorded_at,
        "recorded_by": row.recorded_by,
        "conflict": row.conflict,
        "confirmation": None,  # a double opt-in's event is written at its confirmation
    }


def to_public(row: Any) -> ConsentEventPublic:
    return ConsentEventPublic(
        id=row.id,
        subject_id=row.subject_id,
        purpose=row.purpose,
        recipient=row.recipient,
        action=row.action,
        method=row.method,
        policy_version=row.policy_version,
        notice_sha256=row.notice_sha256,
        evidence=Evidence(form_id=row.form_id, page_url=row.page_url, user_agent=row.user_agent),
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        recorded_by=row.recorded_by,
        conflict=row.conflict,
        confirmation=_confirmation(row),
    )


def _confirmation(row: Any) -> Confirmation | None:
    confirmed_at = getattr(row, "confirmed_at", None)
    if confirmed_at is None:
        return None
    return Confirmation(
        confirmed_at=confirmed_at,
        user_agent=row.confirmed_user_agent,
        ip_hash=row.confirmed_ip_hash,
    )


# A subject's events (and those of every subject merged into it), with a double opt-in's
# confirmation beside its event (the same id).
HISTORY = f"""
SELECT e.*, d.confirmed_at, d.confirmed_user_agent, d.confirmed_ip_hash
FROM consent_events e
LEFT JOIN double_opt_ins d ON d.id = e.id AND d.state = 'confirmed'
WHERE e.subject_id IN ({subjects.LINKED_IDS})
  AND (CAST(:at AS timestamptz) IS NULL OR (e.occurred_at, e.id) > (:at, :id))
ORDER BY e.occurred_at, e.id LIMIT :n
"""  # noqa: S608 - constant SQL


async def list_events(
    session: AsyncSession, *, subject_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[ConsentEventPublic]:
    """A subject's consent history, oldest first: with the events of every subject merged
    into it (each event keeps the subject it was recorded for)."""
    after_at, after_id = decode_time_cursor(cursor) or (None, None)
    rows = (
        await session.execute(
            text(HISTORY),
            {"s": subject_id, "at": after_at, "id": after_id, "n": limit + 1},
        )
    ).all()
    return page_of(rows, limit, lambda r: encode_time_cursor(r.occurred_at, r.id), to_public)


async def current_state(
    session: AsyncSession, *, subject_id: uuid.UUID
) -> list[ConsentStatePublic]:
    await subjects.get_subject(session, subject_id)
    rows = (
        await session.execute(
            text(
                "SELECT purpose, nullif(recipient, '') AS recipient, status, event_id, occurred_at"
                " FROM consent_state WHERE subject_id = :s ORDER BY purpose, recipient"
            ),
            {"s": subject_id},
        )
    ).all()
    return [ConsentStatePublic.model_validate(r._mapping) for r in rows]


# Events with what their receipts name (purpose, policy, third parties, the controller),
# oldest first: a `.format(where=...)` template.
EVENTS_WITH_CONTEXT = f"""
SELECT e.*, p.description, p.direct_marketing, pol.url AS policy_url,
       ARRAY(SELECT name FROM recipients r WHERE e.purpose = ANY (r.purposes)
             ORDER BY name) AS third_parties,
       {controller_identity.IDENTITY_SQL} AS controller
FROM consent_events e JOIN purposes p ON p.key = e.purpose
LEFT JOIN policies pol ON pol.version = e.policy_version
WHERE {{where}} ORDER BY e.occurred_at, e.id
"""  # noqa: S608 - constant SQL
BY_EVENT = text(EVENTS_WITH_CONTEXT.format(where="e.id = :id"))
LINKED_TO_ID = subjects.LINKED_IDS.replace(":s", ":id")
BY_SUBJECT = text(EVENTS_WITH_CONTEXT.format(where=f"e.subject_id IN ({LINKED_TO_ID})"))


def receipt_of(row: Any) -> dict[str, Any]:
    return build_receipt(
        row,
        purpose_description=row.description,
        direct_marketing=row.direct_marketing,
        policy_url=row.policy_url,
        third_parties=list(row.third_parties),
        controller=controller_identity.parse(row.controller),
    )


async def receipt(session: AsyncSession, *, event_id: uuid.UUID) -> dict[str, Any]:
    row = (await session.execute(BY_EVENT, {"id": event_id})).first()
    if row is None:
        raise NotFound("No consent event with this id.")
    return receipt_of(row)


async def history_with_receipts(session: AsyncSession, *, subject_id: uuid.UUID) -> list[Any]:
    """Every consent event of a subject (and of those merged into it) with its receipt,
    oldest first (Art 15 reports)."""
    return [(row, receipt_of(row)) for row in await session.execute(BY_SUBJECT, {"id": subject_id})]
