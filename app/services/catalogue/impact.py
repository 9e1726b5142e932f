"""What a catalogue change would do, shown before it is saved (the console's "Preview").

A preview applies the change through the very service function an API write calls, inside
a savepoint, asks the gate's own predicate (decisions.REASONS_SQL) who is allowed before and
after, and rolls the savepoint back: nothing of it is kept, neither the row nor its audit
entry nor the clock's moments. So the count cannot drift from what the gate will answer.

The subjects asked about come from an index, at most CAP per question: a purpose's bases
(ix_lawful_bases_purpose) or a category's subjects (ix_subjects_category). A subject without
a basis for the purpose is denied (`no_lawful_basis`) whatever the catalogue says, so only
subjects with one can change; the count says when it stopped at CAP.
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import current_settings
from app.core.driver import Conn, connection_of, prepare
from app.models.base import utcnow
from app.models.catalogue import (
    PolicyCreate,
    Purpose,
    PurposeUpdate,
    Recipient,
    RecipientUpdate,
)
from app.models.controller import ControllerUpdate
from app.models.retention import RetentionRuleUpdate
from app.services.catalogue import controller as controller_identity
from app.services.catalogue import entries as catalogue
from app.services.gate.audiences import ID_CANDIDATES
from app.services.gate.decisions import GATE_CASTS, REASONS_SQL
from app.services.retention import rules

CAP = 2000  # subjects per question: a preview answers in well under a second at 100,000
MAX_QUESTIONS = 50  # (purpose, recipient) pairs per preview; catalogues are tens of entries

BY_PURPOSE = prepare(
    "SELECT subject_id FROM lawful_bases WHERE purpose = :purpose ORDER BY subject_id LIMIT :cap",
    purpose="varchar",
    cap="integer",
)
BY_CATEGORY = prepare(
    "SELECT id FROM subjects WHERE category = :category"
    " AND erased_at IS NULL AND merged_into IS NULL LIMIT :cap",
    category="varchar",
    cap="integer",
)
# Who the gate allows among the subjects named by id (constant SQL, no value spliced in).
ALLOWED_SQL = f"""
WITH cand AS ({ID_CANDIDATES})
SELECT e.subject_id FROM ({REASONS_SQL}) e WHERE cardinality(e.reasons) = 0
"""  # noqa: S608
ALLOWED = prepare(ALLOWED_SQL, **GATE_CASTS)


@dataclass(frozen=True)
class Question:
    """One decision the change may alter: `purpose` (to `recipient`) for some subjects."""

    purpose: str
    recipient: str | None = None


@dataclass(frozen=True)
class Effect:
    purpose: str
    recipient: str | None
    checked: int  # subjects asked about
    to_denied: int  # allowed before, denied after
    to_allowed: int  # denied before, allowed after
    capped: bool  # more subjects exist than were asked about


@dataclass(frozen=True)
class Impact:
    at: datetime  # the moment the gate was asked about (a policy's publication, or now)
    effects: list[Effect] = field(default_factory=list)
    changed_fields: list[tuple[str, Any, Any]] = field(default_factory=list)  # controller


async def _allowed(con: Conn, q: Question, ids: list[uuid.UUID], now: datetime) -> set[Any]:
    rows = await ALLOWED.fetch(
        con,
        ids=ids,
        purpose=q.purpose,
        recipient=q.recipient,
        now=now,
        grace_days=current_settings().retention_prospect_grace_days,
    )
    return {row["subject_id"] for row in rows}


async def _subjects(con: Conn, q: Question, category: str | None) -> list[uuid.UUID]:
    if category is not None:
        rows = await BY_CATEGORY.fetch(con, category=category, cap=CAP + 1)
    else:
        rows = await BY_PURPOSE.fetch(con, purpose=q.purpose, cap=CAP + 1)
    return [row[0] for row in rows]


async def _measured(
    session: AsyncSession,
    apply: Callable[[], Awaitable[Any]],
    questions: list[Question],
    now: datetime,
    category: str | None = None,
) -> Impact:
    """Ask each question before and after `apply`, in a savepoint rolled back whatever
    happens (a refusal by the service propagates, with nothing kept)."""
    savepoint = await session.begin_nested()
    try:
        con = await connection_of(session)
        shared = await _subjects(con, Question(""), category) if category else None
        asked = [
            (q, shared if shared is not None else await _subjects(con, q, None))
            for q in questions[:MAX_QUESTIONS]
        ]
        before = [await _allowed(con, q, ids[:CAP], now) for q, ids in asked]
        await apply()
        after = [await _allowed(con, q, ids[:CAP], now) for q, ids in asked]
    finally:
        await savepoint.rollback()
    effects = [
        Effect(q.purpose, q.recipient, len(ids[:CAP]), len(b - a), len(a - b), len(ids) > CAP)
        for (q, ids), b, a in zip(asked, before, after, strict=True)
    ]
    return Impact(now, effects)


async def purpose_change(
    session: AsyncSession, principal: Principal, *, key: str, data: PurposeUpdate
) -> Impact:
    """Its bases, marketing flag or consent period: the decisions for the purpose itself."""
    return await _measured(
        session,
        lambda: catalogue.put_purpose(session, principal, key=key, data=data),
        [Question(key)],
        utcnow(),
    )


async def recipient_change(
    session: AsyncSession, principal: Principal, *, key: str, data: RecipientUpdate
) -> Impact:
    """Decisions to the recipient for every purpose it serves before or after (a purpose
    taken away denies, one added may allow, a new safeguard changes transfers)."""
    before = await session.get(Recipient, key)
    purposes = sorted(set(before.purposes if before else []) | set(data.purposes))
    known = set(await catalogue.descriptions(session, Purpose))
    return await _measured(
        session,
        lambda: catalogue.put_recipient(session, principal, key=key, data=data),
        [Question(p, key) for p in purposes if p in known],
        utcnow(),
    )


async def policy_change(
    session: AsyncSession, principal: Principal, *, data: PolicyCreate
) -> Impact:
    """The re-consent purposes' decisions at the moment the version takes effect (its
    publication, when that is later than now)."""
    now = utcnow()
    at = max(now, data.published_at) if data.published_at is not None else now
    return await _measured(
        session,
        lambda: catalogue.create_policy(session, principal, data=data),
        [Question(p) for p in data.reconsent_purposes],
        at,
    )


async def retention_change(
    session: AsyncSession, principal: Principal, *, category: str, data: RetentionRuleUpdate
) -> Impact:
    """The category's subjects, for every purpose: a shorter period denies
    (`retention_expired`), a longer one may allow again."""
    purposes = sorted(await catalogue.descriptions(session, Purpose))
    return await _measured(
        session,
        lambda: rules.put_rule(session, principal, category=category, data=data),
        [Question(p) for p in purposes],
        utcnow(),
        category=category,
    )


async def controller_change(
    session: AsyncSession, principal: Principal, *, data: ControllerUpdate
) -> Impact:
    """No decision depends on who the controller is: the fields that would change, as the
    service would store them (receipts, proofs and reports show them from then on)."""
    before = await controller_identity.shown(session)
    savepoint = await session.begin_nested()
    try:
        after = controller_identity.document(
            await controller_identity.put(session, principal, data=data)
        )
    finally:
        await savepoint.rollback()
    changed = [(k, before.get(k), v) for k, v in after.items() if before.get(k) != v]
    return Impact(utcnow(), changed_fields=changed)
