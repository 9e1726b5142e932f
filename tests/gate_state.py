"""Arranging the gate's current state directly in SQL (later issues write it through their
own endpoints; the gate is tested here on the state itself)."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.crypto import email_hash

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


async def subject(
    db: AsyncSession,
    *,
    category: str = "customer_contact",
    email: str | None = None,
    restricted: bool = False,
    erased: bool = False,
    created_at: datetime | None = None,
    interest_ceased_at: datetime | None = None,
    sid: uuid.UUID | None = None,
) -> uuid.UUID:
    sid = sid or uuid.uuid4()
    email = email or f"s-{sid.hex[:12]}@example.com"
    await db.execute(
        text(
            "INSERT INTO subjects (id, email, email_hash, name, category, source, restricted,"
            " interest_ceased_at, erased_at, created_at, updated_at)"
            " VALUES (:id, :email, :h, 'Test Person', :cat, 'enquiry', :r, :ic, :er, :c, :c)"
        ),
        {
            "id": sid,
            "email": None if erased else email,
            "h": email_hash(email),
            "cat": category,
            "r": restricted,
            "ic": interest_ceased_at,
            "er": NOW - timedelta(days=1) if erased else None,
            "c": created_at or NOW - timedelta(days=30),
        },
    )
    return sid


async def basis(
    db: AsyncSession,
    sid: uuid.UUID,
    purpose: str,
    basis_: str,
    *,
    contract_start: datetime | None = None,
    contract_end: datetime | None = None,
) -> None:
    await db.execute(
        text(
            "INSERT INTO lawful_bases (subject_id, purpose, basis, contract_ref, contract_start,"
            " contract_end, lia_ref, obligation, set_by, set_at)"
            " VALUES (:s, :p, :b, 'C-1', :cs, :ce, 'LIA-1', 'tax', 'test', now())"
            " ON CONFLICT (subject_id, purpose) DO UPDATE SET basis = EXCLUDED.basis,"
            " contract_start = EXCLUDED.contract_start, contract_end = EXCLUDED.contract_end"
        ),
        {"s": sid, "p": purpose, "b": basis_, "cs": contract_start, "ce": contract_end},
    )


async def consent(
    db: AsyncSession,
    sid: uuid.UUID,
    purpose: str,
    status: str,
    recipient: str = "",
    policy_version: str | None = None,
) -> None:
    """The current consent state; with `policy_version`, backed by a ledger event under it."""
    event_id = None
    if policy_version is not None:
        event_id = uuid.uuid4()
        await db.execute(
            text(
                "INSERT INTO consent_events (id, subject_id, purpose, recipient, action, method,"
                " policy_version, occurred_at, recorded_at, recorded_by)"
                " VALUES (:id, :s, :p, nullif(:r, ''), :st, 'import', :v, now(), now(), 'test')"
            ),
            {
                "id": event_id,
                "s": sid,
                "p": purpose,
                "r": recipient,
                "st": status,
                "v": policy_version,
            },
        )
    await db.execute(
        text(
            "INSERT INTO consent_state (subject_id, purpose, recipient, status, event_id,"
            " occurred_at) VALUES (:s, :p, :r, :st, :e, now())"
            " ON CONFLICT (subject_id, purpose, recipient)"
            " DO UPDATE SET status = EXCLUDED.status, event_id = EXCLUDED.event_id"
        ),
        {"s": sid, "p": purpose, "r": recipient, "st": status, "e": event_id},
    )


async def objection(db: AsyncSession, sid: uuid.UUID, purpose: str) -> None:
    await db.execute(
        text(
            "INSERT INTO objections (subject_id, purpose, source, objected_at)"
            " VALUES (:s, :p, 'crm', now())"
        ),
        {"s": sid, "p": purpose},
    )


async def opt_out(db: AsyncSession, email: str, channel: str = "email") -> None:
    await db.execute(
        text(
            "INSERT INTO marketing_optouts (id, email_hash, channel, source, created_at)"
            " VALUES (:id, :h, :c, 'crm', now()) ON CONFLICT DO NOTHING"
        ),
        {"id": uuid.uuid4(), "h": email_hash(email), "c": channel},
    )


async def email_of(db: AsyncSession, sid: uuid.UUID) -> Any:
    return (await db.execute(text("SELECT email FROM subjects WHERE id = :i"), {"i": sid})).scalar()
