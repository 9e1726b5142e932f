"""Recording consent (§9, Art 7) and Global Privacy Control.

A consent for a known subject id is one round trip (LOOKUP_AND_WRITE): the lookup
(subject, purpose, policy, recipient and what the receipt needs) and, where it found
everything, the write: the notice, the event, the current state, the change-feed entry and
the audit entry. A web form's prospect and GPC take a lookup and then the writes.
"""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import get_settings
from app.core.crypto import email_hash
from app.core.driver import Conn, connection_of, prepare
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.pagination import Page, decode_time_cursor, encode_time_cursor, page_of
from app.models.base import utcnow
from app.models.consent import (
    GPC_PURPOSE,
    UNSPECIFIED_METHOD,
    ConsentEventCreate,
    ConsentEventCreated,
    ConsentEventPublic,
    ConsentStatePublic,
    Evidence,
)
from app.services import catalogue, subjects
from app.services.receipts import build_receipt

CLOCK_SKEW = timedelta(minutes=5)

# What a consent needs to know: the subject, the purpose, the policy version and the
# recipient (each NULL when unknown), and what the receipt shows.
CONTEXT = """
SELECT s.id AS subject_id, s.email_hash, s.erased_at,
       p.key AS purpose_key, p.description, p.direct_marketing,
       pol.version AS policy_version, pol.url AS policy_url,
       (SELECT key FROM recipients WHERE key = CAST(:recipient AS text)) AS recipient_key,
       ARRAY(SELECT name FROM recipients WHERE CAST(:purpose AS text) = ANY (purposes)
             ORDER BY name) AS third_parties
FROM (SELECT 1) one
LEFT JOIN subjects s ON s.id = CAST(:sid AS uuid)
     OR (s.email = CAST(:email AS text) AND s.erased_at IS NULL)
LEFT JOIN purposes p ON p.key = CAST(:purpose AS text)
LEFT JOIN policies pol ON pol.version = CAST(:policy AS text)
"""
LOOKUP = prepare(CONTEXT)

# Storing one event: the notice, the event, the current state, the change-feed entry and the
# audit entry. `{proceed}` is a condition the subject row must meet besides being live.
WRITE_CTES = """
live AS (
  -- Waits for a concurrent erasure and then sees it: no evidence lands on an erased subject.
  SELECT id, email_hash FROM subjects
  WHERE id = CAST(:subject_id AS uuid) AND erased_at IS NULL AND {proceed}
  FOR SHARE
),
notice AS (
  INSERT INTO consent_notices (sha256, text)
  SELECT CAST(:notice_sha AS text), CAST(:notice_text AS text)
  WHERE CAST(:notice_sha AS text) IS NOT NULL AND EXISTS (SELECT 1 FROM live)
  ON CONFLICT DO NOTHING
),
ev AS (
  INSERT INTO consent_events (id, subject_id, purpose, recipient, action, method,
    policy_version, notice_sha256, form_id, page_url, user_agent, occurred_at, recorded_at,
    recorded_by_key_id, recorded_by, conflict)
  SELECT CAST(:id AS uuid), live.id, CAST(:purpose AS text), CAST(:recipient AS text),
    CAST(:action AS text), CAST(:method AS text), CAST(:policy AS text),
    CAST(:notice_sha AS text), CAST(:form_id AS text), CAST(:page_url AS text),
    CAST(:user_agent AS text), CAST(:occurred_at AS timestamptz), now(),
    CAST(:key_id AS uuid), CAST(:key_name AS text), CAST(:conflict AS text)
  FROM live
  RETURNING *
),
state AS (
  INSERT INTO consent_state (subject_id, purpose, recipient, status, event_id, occurred_at)
  SELECT subject_id, purpose, coalesce(recipient, ''), action, id, occurred_at FROM ev
  ON CONFLICT (subject_id, purpose, recipient) DO UPDATE
    SET status = EXCLUDED.status, event_id = EXCLUDED.event_id,
        occurred_at = EXCLUDED.occurred_at
    WHERE consent_state.occurred_at <= EXCLUDED.occurred_at
),
feed AS (
  INSERT INTO changes (kind, subject_id, email_hash, purpose, at)
  SELECT 'consent.' || ev.action, ev.subject_id, live.email_hash, ev.purpose, ev.recorded_at
  FROM ev CROSS JOIN live
),
audited AS (
  INSERT INTO audit_entries (actor_key_id, actor_name, actor_role, action, entity, entity_id,
    digest)
  SELECT :key_id, :key_name, :key_role, 'consent.' || action, 'consent_event', id::text,
    jsonb_build_object('subject_id', subject_id, 'purpose', purpose, 'recipient', recipient,
                       'method', method, 'policy_version', policy_version,
                       'notice_sha256', notice_sha256, 'conflict', conflict)
  FROM ev
)
"""
WRITE = prepare("WITH" + WRITE_CTES.format(proceed="true") + "SELECT * FROM ev")  # noqa: S608 - constant SQL

# The usual consent (a known subject id, no GPC) in one round trip: the lookup, and the
# write only where the lookup found everything the request names. The lookup's columns
# come back beside the event's (the event's are NULL when nothing was written).
EVERYTHING_NAMED_IS_KNOWN = """(
  SELECT c.purpose_key IS NOT NULL
    AND (CAST(:policy AS text) IS NULL OR c.policy_version IS NOT NULL)
    AND (CAST(:recipient AS text) IS NULL OR c.recipient_key IS NOT NULL)
  FROM ctx c)"""
CONTEXT_BESIDE_EVENT = """
SELECT c.subject_id AS known_subject_id, c.email_hash AS known_email_hash,
  c.purpose_key, c.description, c.direct_marketing, c.policy_version AS known_policy_version,
  c.policy_url, c.recipient_key, c.third_parties, ev.*
FROM ctx c LEFT JOIN ev ON true"""
LOOKUP_AND_WRITE = prepare(
    f"WITH ctx AS ({CONTEXT}),"
    + WRITE_CTES.format(proceed=EVERYTHING_NAMED_IS_KNOWN)
    + CONTEXT_BESIDE_EVENT
)

# A new objection goes into the change feed with it (sync must stop pushing the subject).
OBJECT = prepare("""
WITH o AS (
  INSERT INTO objections (subject_id, purpose, source, objected_at)
  VALUES (:subject_id, :purpose, :source, now())
  ON CONFLICT (subject_id, purpose) DO NOTHING
  RETURNING subject_id, purpose
)
INSERT INTO changes (kind, subject_id, email_hash, purpose, at)
SELECT 'objection', subject_id, CAST(:email_hash AS text), purpose, now() FROM o
""")
CURRENT = prepare(
    "SELECT status, event_id FROM consent_state WHERE subject_id = :s"
    " AND purpose = :p AND recipient = ''"
)
# A web form's prospect, created, audited and fed to sync in one statement (as
# subjects.create_subject would: same fields, same audit entry, same change-feed entry);
# nothing when a live subject has the e-mail.
NEW_WEB_SUBJECT = prepare("""
WITH s AS (
  INSERT INTO subjects (id, email, email_hash, category, source, source_detail, restricted,
                        created_at, updated_at)
  VALUES (:id, :email, :email_hash, 'prospect', 'enquiry', 'web form consent', false,
          now(), now())
  ON CONFLICT (email) WHERE erased_at IS NULL DO NOTHING
  RETURNING id, email_hash
),
audited AS (
  INSERT INTO audit_entries (actor_key_id, actor_name, actor_role, action, entity, entity_id,
                             digest)
  SELECT :key_id, :key_name, :key_role, 'subject.create', 'subject', id::text,
         '{"fields": ["category", "email", "source", "source_detail"]}'::jsonb
  FROM s
),
fed AS (
  INSERT INTO changes (kind, subject_id, email_hash, purpose, at)
  SELECT 'subject.created', id, email_hash, NULL, now() FROM s
)
SELECT id, email_hash FROM s
""")
LIVE_BY_EMAIL = prepare("SELECT id FROM subjects WHERE email = :email AND erased_at IS NULL")


@dataclass
class Context:
    subject_id: uuid.UUID
    email_hash: str | None
    description: str
    direct_marketing: bool
    policy_url: str | None
    third_parties: list[str]

    @classmethod
    def of(cls, subject_id: uuid.UUID, email_hash: str | None, lookup: Any) -> "Context":
        """The subject as found (or created), and the receipt's fields from the lookup row
        (CONTEXT's columns)."""
        return cls(
            subject_id,
            email_hash,
            lookup.description,
            lookup.direct_marketing,
            lookup.policy_url,
            list(lookup.third_parties),
        )


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
    )


def _refuse_unknown(
    data: ConsentEventCreate,
    purpose_key: str | None,
    policy_version: str | None,
    recipient_key: str | None,
) -> None:
    """422 for what the request names that the catalogue does not know, in this order."""
    if purpose_key is None:
        raise Unprocessable(f"Unknown purpose `{data.purpose}`.", field="purpose")
    if data.policy_version is not None and policy_version is None:
        raise Unprocessable(
            f"Unknown policy version `{data.policy_version}`.", field="policy_version"
        )
    if data.recipient is not None and recipient_key is None:
        raise Unprocessable(f"Unknown recipient `{data.recipient}`.", field="recipient")


async def _context(con: Conn, principal: Principal, data: ConsentEventCreate) -> Context:
    row = await LOOKUP.fetchrow(
        con,
        sid=data.subject_id,
        email=data.email,
        purpose=data.purpose,
        policy=data.policy_version,
        recipient=data.recipient,
    )
    assert row is not None  # one row always: FROM (SELECT 1)
    _refuse_unknown(data, row.purpose_key, row.policy_version, row.recipient_key)
    subject_id, email_hash = row.subject_id, row.email_hash
    if subject_id is None:
        subject_id, email_hash = await _new_web_subject(con, principal, data)
    elif row.erased_at is not None:
        raise Conflict("The subject has been erased.")
    return Context.of(subject_id, email_hash, row)


async def _new_web_subject(
    con: Conn, principal: Principal, data: ConsentEventCreate
) -> tuple[uuid.UUID, str | None]:
    """A web form's consent from an unknown e-mail creates the prospect in the same call.
    Two such forms at once: the second uses the subject the first created."""
    if data.email is None or data.action != "given" or principal.role != "website":
        raise NotFound("No such subject.")
    hashed = email_hash(data.email)
    created = await NEW_WEB_SUBJECT.fetchrow(
        con,
        id=uuid.uuid4(),
        email=data.email,
        email_hash=hashed,
        key_id=principal.key_id,
        key_name=principal.name,
        key_role=principal.role,
    )
    if created is not None:
        return created.id, created.email_hash
    existing = await LIVE_BY_EMAIL.fetchrow(con, email=data.email)
    if existing is None:  # the e-mail's subject was erased between the two statements
        raise Conflict("A concurrent request changed the same data; retry.")
    return existing.id, hashed


def _write_params(
    principal: Principal,
    subject_id: uuid.UUID,
    *,
    purpose: str,
    recipient: str | None,
    action: str,
    method: str,
    policy: str | None,
    notice_text: str | None,
    evidence: Evidence | None,
    occurred_at: datetime,
    conflict: str | None = None,
) -> dict[str, Any]:
    evidence = evidence or Evidence()
    notice_sha = hashlib.sha256(notice_text.encode()).hexdigest() if notice_text else None
    return {
        "id": uuid.uuid4(),
        "subject_id": subject_id,
        "purpose": purpose,
        "recipient": recipient,
        "action": action,
        "method": method,
        "policy": policy,
        "notice_sha": notice_sha,
        "notice_text": notice_text,
        "form_id": evidence.form_id,
        "page_url": evidence.page_url,
        "user_agent": evidence.user_agent,
        "occurred_at": occurred_at,
        "key_id": principal.key_id,
        "key_name": principal.name,
        "key_role": principal.role,
        "conflict": conflict,
    }


async def _write(con: Conn, principal: Principal, ctx: Context, **event: Any) -> Any:
    row = await WRITE.fetchrow(con, **_write_params(principal, ctx.subject_id, **event))
    if row is None:
        raise Conflict("The subject has been erased.")
    return row


def _requested_event(data: ConsentEventCreate, occurred_at: datetime) -> dict[str, Any]:
    """The event a request asks for (before GPC adds its own)."""
    return {
        "purpose": data.purpose,
        "recipient": data.recipient,
        "action": data.action,
        # A withdrawal may come without a method (Art 7(3)); never refuse a "no".
        "method": data.method or UNSPECIFIED_METHOD,
        "policy": data.policy_version,
        "notice_text": data.notice_text,
        "evidence": data.evidence,
        "occurred_at": occurred_at,
    }


async def _record_for_known_subject(
    con: Conn, principal: Principal, data: ConsentEventCreate, occurred_at: datetime
) -> tuple[Context, Any]:
    """The usual consent in one statement (LOOKUP_AND_WRITE). Where nothing was written,
    the same answer as the two-step path: what is unknown, else the subject is missing or
    erased."""
    assert data.subject_id is not None
    params = _write_params(principal, data.subject_id, **_requested_event(data, occurred_at))
    row = await LOOKUP_AND_WRITE.fetchrow(con, sid=data.subject_id, email=None, **params)
    assert row is not None  # one row always: the lookup's
    if row.id is None:
        _refuse_unknown(data, row.purpose_key, row.known_policy_version, row.recipient_key)
        if row.known_subject_id is None:
            raise NotFound("No such subject.")
        raise Conflict("The subject has been erased.")
    return Context.of(row.known_subject_id, row.known_email_hash, row), row


async def _gpc_withdrawal(
    con: Conn,
    principal: Principal,
    ctx: Context,
    *,
    same_request: uuid.UUID | None,
    always: bool,
    evidence: Evidence | None,
    occurred_at: datetime,
) -> Any | None:
    """GPC: withdraw sharing with third parties, and object to it so that a
    legitimate-interests basis cannot carry it either. Never erasure. It takes effect now
    (a back-dated signal cannot leave an older consent standing), and where it contradicts
    an explicit consent, the withdrawal stands and the event records the conflict."""
    await OBJECT.execute(
        con,
        subject_id=ctx.subject_id,
        email_hash=ctx.email_hash,
        purpose=GPC_PURPOSE,
        source="gpc",
    )
    current = await CURRENT.fetchrow(con, s=ctx.subject_id, p=GPC_PURPOSE)
    if current is not None and current.status == "withdrawn" and not always:
        return None
    conflict = None
    if current is not None and current.status == "given":
        conflict = (
            "GPC signal overrides the consent given in the same request"
            if current.event_id == same_request
            else "GPC signal overrides an earlier explicit consent"
        )
    return await _write(
        con,
        principal,
        ctx,
        purpose=GPC_PURPOSE,
        recipient=None,
        action="withdrawn",
        method="gpc",
        policy=None,
        notice_text=None,
        evidence=evidence,
        occurred_at=max(utcnow(), occurred_at),
        conflict=conflict,
    )


def needs_transaction(data: ConsentEventCreate, gpc: bool) -> bool:
    """A consent for a known subject id, without GPC, is one statement (atomic by itself);
    GPC and web-form prospects write several statements that go together."""
    return data.subject_id is None or gpc or data.method == "gpc"


async def record_consent(
    con: Conn | AsyncSession,
    principal: Principal,
    *,
    data: ConsentEventCreate,
    gpc: bool = False,
) -> ConsentEventCreated:
    """`consent_payload` as a model (for Python callers)."""
    payload = await consent_payload(con, principal, data=data, gpc=gpc)
    return ConsentEventCreated.model_validate(payload)


async def consent_payload(
    con: Conn | AsyncSession,
    principal: Principal,
    *,
    data: ConsentEventCreate,
    gpc: bool = False,
) -> dict[str, Any]:
    """Append a consent event, move the current state, and return it with its receipt
    (the ConsentEventCreated document). On a bare connection in autocommit mode, only
    when not `needs_transaction`."""
    now = utcnow()
    occurred_at = data.occurred_at or now
    if occurred_at > now + CLOCK_SKEW:
        raise Unprocessable("`occurred_at` is in the future.", field="occurred_at")
    driver = await connection_of(con)
    extra: list[dict[str, Any]] = []
    if not needs_transaction(data, gpc):  # a subject id (exactly one of id and e-mail)
        ctx, row = await _record_for_known_subject(driver, principal, data, occurred_at)
    elif data.method == "gpc" and data.purpose == GPC_PURPOSE:  # the request is the signal
        ctx = await _context(driver, principal, data)
        row = await _gpc_withdrawal(
            driver,
            principal,
            ctx,
            same_request=None,
            always=True,
            evidence=data.evidence,
            occurred_at=occurred_at,
        )
    else:
        ctx = await _context(driver, principal, data)
        row = await _write(driver, principal, ctx, **_requested_event(data, occurred_at))
        if gpc:
            signal = await _gpc_withdrawal(
                driver,
                principal,
                ctx,
                same_request=row.id,
                always=False,
                evidence=None,
                occurred_at=row.occurred_at,
            )
            extra = [event_document(signal)] if signal is not None else []
    receipt = build_receipt(
        row,
        purpose_description=ctx.description,
        direct_marketing=ctx.direct_marketing,
        policy_url=ctx.policy_url,
        third_parties=ctx.third_parties,
        settings=get_settings(),
    )
    return {**event_document(row), "receipt": receipt, "also_recorded": extra}


async def list_events(
    session: AsyncSession, *, subject_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[ConsentEventPublic]:
    """A subject's consent history, oldest first."""
    after_at, after_id = decode_time_cursor(cursor) or (None, None)
    rows = (
        await session.execute(
            text(
                "SELECT * FROM consent_events WHERE subject_id = :s"
                " AND (CAST(:at AS timestamptz) IS NULL OR (occurred_at, id) > (:at, :id))"
                " ORDER BY occurred_at, id LIMIT :n"
            ),
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


# Events with what their receipts name (purpose, policy, third parties), oldest first.
EVENTS_WITH_CONTEXT = """
SELECT e.*, p.description, p.direct_marketing, pol.url AS policy_url,
       ARRAY(SELECT name FROM recipients r WHERE e.purpose = ANY (r.purposes)
             ORDER BY name) AS third_parties
FROM consent_events e JOIN purposes p ON p.key = e.purpose
LEFT JOIN policies pol ON pol.version = e.policy_version
WHERE {where} ORDER BY e.occurred_at, e.id
"""
BY_EVENT = text(EVENTS_WITH_CONTEXT.format(where="e.id = :id"))
BY_SUBJECT = text(EVENTS_WITH_CONTEXT.format(where="e.subject_id = :id"))


def receipt_of(row: Any) -> dict[str, Any]:
    return build_receipt(
        row,
        purpose_description=row.description,
        direct_marketing=row.direct_marketing,
        policy_url=row.policy_url,
        third_parties=list(row.third_parties),
        settings=get_settings(),
    )


async def receipt(session: AsyncSession, *, event_id: uuid.UUID) -> dict[str, Any]:
    row = (await session.execute(BY_EVENT, {"id": event_id})).first()
    if row is None:
        raise NotFound("No consent event with this id.")
    return receipt_of(row)


async def history_with_receipts(session: AsyncSession, *, subject_id: uuid.UUID) -> list[Any]:
    """Every consent event of a subject with its receipt, oldest first (Art 15 reports)."""
    return [(row, receipt_of(row)) for row in await session.execute(BY_SUBJECT, {"id": subject_id})]


async def withdraw_all(
    session: AsyncSession, principal: Principal, *, subject: Any, purposes: list[str] | None
) -> list[str]:
    """Withdraw every consent given (for the named purposes, or all), effective at once."""
    if purposes:
        await catalogue.require_purposes(session, purposes)
    rows = (
        await session.execute(
            text(
                "SELECT purpose, nullif(recipient, '') AS recipient FROM consent_state"
                " WHERE subject_id = :s AND status = 'given'"
                " AND (CAST(:p AS text[]) IS NULL OR purpose = ANY(CAST(:p AS text[])))"
                " ORDER BY purpose, recipient"
            ),
            {"s": subject.id, "p": purposes},
        )
    ).all()
    ctx = Context(subject.id, subject.email_hash, "", False, None, [])
    driver = await connection_of(session)
    for row in rows:
        await _write(
            driver,
            principal,
            ctx,
            purpose=row.purpose,
            recipient=row.recipient,
            action="withdrawn",
            method="rights_request",
            policy=None,
            notice_text=None,
            evidence=None,
            occurred_at=utcnow(),
        )
    return [r.purpose if r.recipient is None else f"{r.purpose}:{r.recipient}" for r in rows]
