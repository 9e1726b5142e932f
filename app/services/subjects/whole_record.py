"""A person's whole record for the privacy team (the console's subject page): each part
read by the service the API reads it with, plus the objections, which no API lists on
their own. Reads only; a handful of indexed statements, one at a time (one session)."""

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.state import Objection
from app.models.subject import to_public
from app.services.audit import listing as audit_listing
from app.services.bases import records as bases
from app.services.consent import reading as consent_reading
from app.services.optouts import records as optouts
from app.services.rights import requests as rights
from app.services.subjects import records

DECISIONS_SHOWN = 20
REQUESTS_SHOWN = 50


async def _objections(session: AsyncSession, subject_id: uuid.UUID) -> list[Any]:
    ids = await records.linked_ids(session, subject_id)
    stmt = (
        select(Objection)
        .where(col(Objection.subject_id).in_(ids))
        .order_by(col(Objection.objected_at))
    )
    return list((await session.execute(stmt)).scalars())


async def whole_record(session: AsyncSession, subject_id: uuid.UUID) -> dict[str, Any]:
    subject = await records.get_subject(session, subject_id)
    current = await bases.list_bases(session, subject_id=subject_id)
    histories = {
        b.purpose: await bases.basis_history(session, subject_id=subject_id, purpose=b.purpose)
        for b in current
    }
    events = await consent_reading.history_with_receipts(session, subject_id=subject_id)
    decided = await audit_listing.list_decisions(
        session, subject_id=subject_id, purpose=None, limit=DECISIONS_SHOWN, cursor=None
    )
    requests = await rights.list_requests(
        session, status=None, type_=None, overdue=False, limit=REQUESTS_SHOWN, cursor=None,
        subject_id=subject_id,
    )  # fmt: skip
    return {
        "subject": to_public(subject),
        "bases": current,
        "basis_history": histories,
        "consents": await consent_reading.current_state(session, subject_id=subject_id),
        "events": [(consent_reading.to_public(row), receipt) for row, receipt in events],
        "opt_outs": await optouts.check(session, email=subject.email) if subject.email else None,
        "objections": await _objections(session, subject_id),
        "decisions": decided.items,
        "requests": requests.items,
    }
