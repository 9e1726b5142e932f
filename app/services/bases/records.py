"""Lawful bases per (subject, purpose), with an append-only history (§9, Art 6)."""

import uuid
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.auth import Principal
from app.core.errors import Conflict, NotFound, Unprocessable
from app.models.base import utcnow
from app.models.basis import (
    LawfulBasisHistory,
    LawfulBasisRecord,
    LawfulBasisSet,
)
from app.models.catalogue import Purpose
from app.services.audit import entries as audit
from app.services.catalogue.known import unknown_key
from app.services.changes import clock
from app.services.changes import feed as changes
from app.services.subjects.records import get_subject, linked_ids, lock_subject, refuse_merged

# The import's set-based batch writes bases and their history with these (its rows are new
# subjects: nothing to replace); `set_basis` writes the same columns through the models.
INSERT_BASIS = """INSERT INTO lawful_bases (subject_id, purpose, basis, contract_ref,
    contract_start, contract_end, lia_ref, obligation, note, set_by, set_at)"""
INSERT_BASIS_HISTORY = (
    "INSERT INTO lawful_basis_history (subject_id, purpose, action, value, previous, actor, at)"
)

VALUE_FIELDS = (
    "basis",
    "contract_ref",
    "contract_start",
    "contract_end",
    "lia_ref",
    "obligation",
    "note",
)


def _value(record: Any) -> dict[str, Any]:
    out = {}
    for field in VALUE_FIELDS:
        v = getattr(record, field)
        out[field] = v.isoformat() if hasattr(v, "isoformat") else v
    return out


# Basis writers of one subject, one at a time (a transaction-level advisory lock in its own
# key space: class BASES_LOCK, the subject's hash).
BASES_LOCK = 7_310_557
SERIALISE = text("SELECT pg_advisory_xact_lock(CAST(:k AS integer), hashtext(CAST(:s AS text)))")
# The same lock in a statement, for the subject id the SQL expression `{subject}` names.
LOCK_BASES = f"pg_advisory_xact_lock({BASES_LOCK}, hashtext(CAST({{subject}} AS text)))"

# Consent as the basis where none is recorded (DOMAIN.md "Lawful basis", Art 6(1)(a)). The
# consent write (consent/statements.py) and the import compose these CTEs over a relation of
# consents given (subject_id, purpose, event_id, email_hash; one row per subject and purpose):
# where the purpose allows consent and no basis is recorded, `consent` becomes the basis,
# with its history entry and its change-feed entry, the consent event (`consent_event:<id>`)
# being the actor of both. ON CONFLICT DO NOTHING: a recorded basis, even one committed after
# the statement began, is never replaced. A single write holds the subject row FOR SHARE and
# then LOCK_BASES, in that order, as `set_basis` does: it reads the basis the writer before it
# left, so the history stays one chain.
CONSENT_ACTOR = "consent_event:"
# The history's `value` as `_value` gives it for a consent basis: every other field null.
_NULLS = ", ".join(f"'{field}', CAST(NULL AS text)" for field in VALUE_FIELDS[1:])
CONSENT_VALUE = f"jsonb_build_object('basis', 'consent', {_NULLS})"
CONSENT_BASIS_CTES = f"""
consent_basis AS (
  {INSERT_BASIS}
  SELECT g.subject_id, g.purpose, 'consent', NULL, NULL, NULL, NULL, NULL, NULL,
    '{CONSENT_ACTOR}' || g.event_id::text, now()
  FROM <given> g JOIN purposes p ON p.key = g.purpose AND 'consent' = ANY (p.allowed_bases)
  ON CONFLICT (subject_id, purpose) DO NOTHING
  RETURNING subject_id, purpose, set_by, set_at
),
consent_basis_history AS (
  {INSERT_BASIS_HISTORY}
  SELECT subject_id, purpose, 'set', {CONSENT_VALUE}, NULL, set_by, set_at
  FROM consent_basis
),
consent_basis_feed AS (
  {changes.INSERT_CHANGE}
  SELECT 'basis.set', b.subject_id, g.email_hash, b.purpose, b.set_at
  FROM consent_basis b JOIN <given> g USING (subject_id, purpose)
)
"""  # noqa: S608 - constant SQL


# A single write's audit entry for it, as `set_basis` writes one (the import audits its
# batch as a whole); the actor is the key that recorded the consent event.
CONSENT_BASIS_AUDITED = f"""
consent_basis_audited AS (
  {audit.INSERT_AUDIT_ENTRY}
  SELECT :key_id, :key_name, :key_role, 'basis.set', 'subject', b.subject_id::text,
    jsonb_build_object('purpose', b.purpose, 'basis', 'consent', 'replaced', false,
                       'consent_event_id', substr(b.set_by, {len(CONSENT_ACTOR) + 1}))
  FROM consent_basis b
)
"""  # noqa: S608 - constant SQL


def consent_basis_ctes(given: str) -> str:
    """CONSENT_BASIS_CTES over the relation named `given` (a CTE or a table)."""
    return CONSENT_BASIS_CTES.replace("<given>", given)


async def _lock_subject(session: AsyncSession, subject_id: uuid.UUID, *, live: bool) -> None:
    """Before a basis is read and written: the subject row FOR SHARE (an erasure or an
    update of the subject waits, or has finished and is seen; consent writers, FOR SHARE
    too, are not held up; `live`: 409 for an erased subject), then the subject's basis
    writers serialised, so each reads the basis the one before it wrote (one history chain)
    and the subject's clock sees every basis. Row lock first: an erasure holding the row
    (and ending bases) never waits on us."""
    subject = await lock_subject(session, subject_id, shared=True)
    if live and subject.erased_at is not None:
        raise Conflict("The subject has been erased.")
    if live:
        refuse_merged(subject)
    await session.execute(SERIALISE, {"k": BASES_LOCK, "s": str(subject_id)})


async def _current(
    session: AsyncSession, subject_id: uuid.UUID, purpose: str
) -> LawfulBasisRecord | None:
    """The basis as committed now (read after the locks, never from the session's cache)."""
    return (
        await session.execute(
            select(LawfulBasisRecord)
            .where(
                col(LawfulBasisRecord.subject_id) == subject_id,
                col(LawfulBasisRecord.purpose) == purpose,
            )
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def set_basis(
    session: AsyncSession,
    principal: Principal,
    *,
    subject_id: uuid.UUID,
    purpose: str,
    data: LawfulBasisSet,
    actor: str | None = None,
) -> LawfulBasisRecord:
    """Record the basis for (subject, purpose); it must be one the purpose allows. `actor`
    names who set it in the history when that is not the calling key (a merge)."""
    await _lock_subject(session, subject_id, live=True)
    await _require_allowed(session, purpose, data.basis)
    previous = await _current(session, subject_id, purpose)
    previous_value = _value(previous) if previous else None
    actor = actor or principal.name
    record = await _write_basis(session, actor, subject_id, purpose, data, previous_value)
    await audit.record(
        session,
        principal,
        "basis.set",
        "subject",
        subject_id,
        purpose=purpose,
        basis=data.basis,
        replaced=previous_value is not None,
    )
    await changes.append(
        session, "basis.set", subject_id=subject_id, email_hash=None, purpose=purpose
    )
    await clock.schedule(session, [subject_id])  # its contract's dates, its retention's
    return record


async def _require_allowed(session: AsyncSession, purpose: str, basis: str) -> None:
    """404 for an unknown purpose, 422 for a basis the purpose does not allow."""
    allowed = (
        await session.execute(select(col(Purpose.allowed_bases)).where(col(Purpose.key) == purpose))
    ).scalar_one_or_none()
    if allowed is None:
        raise await unknown_key(session, "purpose", purpose, not_found=True)
    if basis not in allowed:
        raise Unprocessable(
            f"The purpose `{purpose}` may rest only on: {', '.join(sorted(allowed))}.",
            field="basis",
            allowed_bases=sorted(allowed),
        )


async def _write_basis(
    session: AsyncSession,
    actor: str,
    subject_id: uuid.UUID,
    purpose: str,
    data: LawfulBasisSet,
    previous_value: dict[str, Any] | None,
) -> LawfulBasisRecord:
    """The basis, inserted or replaced, and its history entry (`previous`: what it replaced)."""
    now = utcnow()
    values = {**data.model_dump(), "set_by": actor, "set_at": now}
    stmt = pg_insert(LawfulBasisRecord).values(subject_id=subject_id, purpose=purpose, **values)
    stmt = stmt.on_conflict_do_update(index_elements=["subject_id", "purpose"], set_=values)
    await session.execute(stmt)
    record = LawfulBasisRecord(subject_id=subject_id, purpose=purpose, **values)
    await session.execute(
        insert(LawfulBasisHistory).values(
            subject_id=subject_id,
            purpose=purpose,
            action="set",
            value=_value(record),
            previous=previous_value,
            actor=actor,
            at=now,
        )
    )
    return record


async def list_bases(session: AsyncSession, *, subject_id: uuid.UUID) -> list[LawfulBasisRecord]:
    await get_subject(session, subject_id)
    stmt = (
        select(LawfulBasisRecord)
        .where(col(LawfulBasisRecord.subject_id) == subject_id)
        .order_by(col(LawfulBasisRecord.purpose))
    )
    return list((await session.execute(stmt)).scalars())


async def basis_history(
    session: AsyncSession, *, subject_id: uuid.UUID, purpose: str
) -> list[LawfulBasisHistory]:
    await get_subject(session, subject_id)
    # With the history of every subject merged into this one (the merge set the basis here
    # only where this subject had none, with the merge as the actor).
    stmt = (
        select(LawfulBasisHistory)
        .where(
            col(LawfulBasisHistory.subject_id).in_(await linked_ids(session, subject_id)),
            col(LawfulBasisHistory.purpose) == purpose,
        )
        .order_by(col(LawfulBasisHistory.id))
    )
    return list((await session.execute(stmt)).scalars())


async def end_basis(
    session: AsyncSession, principal: Principal, *, subject_id: uuid.UUID, purpose: str
) -> None:
    await _lock_subject(session, subject_id, live=False)
    removed = (
        await session.execute(
            delete(LawfulBasisRecord)
            .where(
                col(LawfulBasisRecord.subject_id) == subject_id,
                col(LawfulBasisRecord.purpose) == purpose,
            )
            .returning(LawfulBasisRecord)
        )
    ).scalar_one_or_none()
    if removed is None:
        raise NotFound(f"No basis is recorded for `{purpose}`.")
    await session.execute(
        insert(LawfulBasisHistory).values(
            subject_id=subject_id,
            purpose=purpose,
            action="ended",
            value=None,
            previous=_value(removed),
            actor=principal.name,
            at=utcnow(),
        )
    )
    await audit.record(session, principal, "basis.end", "subject", subject_id, purpose=purpose)
    await changes.append(
        session, "basis.ended", subject_id=subject_id, email_hash=None, purpose=purpose
    )
    await clock.schedule(session, [subject_id])
