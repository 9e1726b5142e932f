"""Double opt-in (§9, Art 7(1)): a consent asked for with `confirm_by_email` is no consent
until the person confirms it through the signed link e-mailed to the address.

Until then it is a row of `double_opt_ins`, not an event: the consent ledger, the current
state, the gate and consent-as-basis never see it, so the gate says `consent_missing`. The
confirmation writes the event through the one consent write (consent/statements.py), with
the pending row's id, and keeps its evidence beside it (the time, the user agent and a keyed
hash of the address it came from). A request left unconfirmed expires after
CONSENT_DOUBLE_OPT_IN_DAYS: only the address hash, the purpose and the times stay, and a
subject the attempt alone created is erased (Art 5(1)(c), (e)).

A repeat for the same address and purpose while one is pending answers with the pending
one and sends no second e-mail (the rate limit per address: one message per purpose per
window, whoever asks)."""

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import current_settings
from app.core.driver import Conn, prepare
from app.core.errors import Conflict, ServiceUnavailable
from app.models.base import utcnow
from app.models.consent import UNSPECIFIED_METHOD, ConsentEventCreate
from app.models.subject import Subject
from app.services.audit.entries import INSERT_AUDIT_ENTRY
from app.services.mail import outbox
from app.services.mail.outbox import INSERT_EMAIL

# One pending request per address and purpose at a time: concurrent repeats queue here.
REPEAT_LOCK = 7_310_561  # (this class, the address hash and purpose)
LOCK = prepare(
    f"SELECT pg_advisory_xact_lock({REPEAT_LOCK}, hashtext(CAST(:h AS text) || ':' || :p))"
)
EXPIRY_LOCK = 7_310_562  # one expiry run at a time per database
HASH_OF = prepare("SELECT email_hash FROM subjects WHERE id = :sid")
INSERT_DOUBLE_OPT_IN = """INSERT INTO double_opt_ins (id, subject_id, email_hash,
    email_hash_key, purpose, state, request, created_subject, requested_at, expires_at)"""
REQUEST = prepare(f"""
WITH s AS (
  SELECT id, email_hash, email_hash_key FROM subjects
  WHERE id = CAST(:sid AS uuid) AND erased_at IS NULL AND email_hash IS NOT NULL
  FOR SHARE
),
repeat AS (
  SELECT d.id, d.subject_id, d.requested_at, d.expires_at, d.request FROM double_opt_ins d
  JOIN s ON d.email_hash = s.email_hash
  WHERE d.purpose = CAST(:purpose AS text) AND d.state = 'pending'
    AND d.expires_at > CAST(:now AS timestamptz)
  ORDER BY d.requested_at DESC LIMIT 1
),
doi AS (
  {INSERT_DOUBLE_OPT_IN}
  SELECT CAST(:id AS uuid), s.id, s.email_hash, s.email_hash_key, CAST(:purpose AS text),
    'pending', CAST(:request AS jsonb), CAST(:created AS boolean),
    CAST(:now AS timestamptz), CAST(:expires AS timestamptz)
  FROM s WHERE NOT EXISTS (SELECT 1 FROM repeat)
  RETURNING id, subject_id, requested_at, expires_at, request
),
mail AS (
  {INSERT_EMAIL}
  SELECT gen_random_uuid(), 'double_opt_in', id, subject_id, 'pending', 0,
    CAST(:now AS timestamptz), CAST(:now AS timestamptz) FROM doi
),
audited AS (
  {INSERT_AUDIT_ENTRY}
  SELECT CAST(:key_id AS uuid), CAST(:key_name AS text), CAST(:key_role AS text),
    'consent.requested', 'double_opt_in', id::text,
    jsonb_build_object('subject_id', subject_id, 'purpose', CAST(:purpose AS text))
  FROM doi
)
SELECT *, true AS email_sent FROM doi
UNION ALL
SELECT *, false AS email_sent FROM repeat
""")  # noqa: S608 - constant SQL


def _request(principal: Principal, data: ConsentEventCreate) -> dict[str, Any]:
    """What the confirmation will write (and the page shows): the event asked for and the
    key that asked (it records the event on confirmation)."""
    evidence = data.evidence.model_dump() if data.evidence else {}
    return {
        "recipient": data.recipient,
        "method": data.method or UNSPECIFIED_METHOD,
        "policy_version": data.policy_version,
        "notice_text": data.notice_text,
        "evidence": evidence,
        "stated_at": data.occurred_at.isoformat() if data.occurred_at else None,
        "key_id": str(principal.key_id) if principal.key_id else None,
        "key_name": principal.name,
        "key_role": principal.role,
    }


def _pending_document(row: Any, purpose: str) -> dict[str, Any]:
    request = json.loads(row.request) if isinstance(row.request, str) else row.request
    return {
        "id": row.id,
        "subject_id": row.subject_id,
        "purpose": purpose,
        "recipient": request["recipient"],
        "action": "given",
        "method": request["method"],
        "policy_version": request["policy_version"],
        "status": "pending",
        "requested_at": row.requested_at,
        "confirm_by": row.expires_at,
        "email_sent": row.email_sent,
    }


async def request_confirmation(
    con: Conn,
    principal: Principal,
    data: ConsentEventCreate,
    *,
    subject_id: uuid.UUID,
    created_subject: bool,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Queue the e-mail and keep the pending request (inside the caller's transaction);
    the ConsentEventPending document. The subject and what the request names are known."""
    settings = current_settings()
    if settings.smtp_url is None:
        raise ServiceUnavailable("Double opt-in needs CONSENT_SMTP_URL (where to send e-mail).")
    now = now or utcnow()
    hashed = await HASH_OF.fetchrow(con, sid=subject_id)
    if hashed is not None and hashed.email_hash is not None:
        await LOCK.execute(con, h=hashed.email_hash, p=data.purpose)
    row = await REQUEST.fetchrow(
        con,
        sid=subject_id,
        purpose=data.purpose,
        id=uuid.uuid4(),
        request=json.dumps(_request(principal, data)),
        created=created_subject,
        now=now,
        expires=now + timedelta(days=settings.double_opt_in_days),
        key_id=principal.key_id,
        key_name=principal.name,
        key_role=principal.role,
    )
    if row is None:
        raise Conflict("The subject has been erased or has no e-mail address.")
    return _pending_document(row, data.purpose)


# --- Expiry ---------------------------------------------------------------------------------
EXPIRY = Principal(None, "double opt-in expiry", "system", frozenset())
EXPIRY_BATCH = 200
DUE = text("""
SELECT id, subject_id, created_subject FROM double_opt_ins
WHERE state = 'pending' AND expires_at <= :now
ORDER BY expires_at LIMIT :limit
FOR UPDATE SKIP LOCKED
""")
# Only the attempt's hashed record stays: the address hash, the purpose and the times.
EXPIRE = text("""
UPDATE double_opt_ins SET state = 'expired', expired_at = :now, request = NULL,
  subject_id = NULL
WHERE id = ANY(CAST(:ids AS uuid[]))
""")
# Subjects the attempt created about whom nothing else was recorded since (run after EXPIRE:
# another live double opt-in of theirs still counts).
ATTEMPT_ONLY = text("""
SELECT s.id FROM subjects s
WHERE s.id = ANY(CAST(:ids AS uuid[])) AND s.erased_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM consent_events x WHERE x.subject_id = s.id)
  AND NOT EXISTS (SELECT 1 FROM lawful_bases x WHERE x.subject_id = s.id)
  AND NOT EXISTS (SELECT 1 FROM rights_requests x WHERE x.subject_id = s.id)
  AND NOT EXISTS (SELECT 1 FROM objections x WHERE x.subject_id = s.id)
  AND NOT EXISTS (SELECT 1 FROM double_opt_ins x WHERE x.subject_id = s.id)
FOR UPDATE
""")


async def expire_due(session: AsyncSession, *, now: datetime | None = None) -> int:
    """Expire what waited past CONSENT_DOUBLE_OPT_IN_DAYS (one batch, in the caller's
    transaction): its mail is cancelled if still unsent, only the hashed record stays, and a
    subject the attempt alone created is erased through the erasure write path. Returns how
    many expired."""
    from app.services.rights import erasure  # erasure composes the consent write: a cycle

    now = now or utcnow()
    locked = await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": EXPIRY_LOCK})
    if not locked.scalar_one():
        return 0
    rows = (await session.execute(DUE, {"now": now, "limit": EXPIRY_BATCH})).all()
    if not rows:
        return 0
    ids = [r.id for r in rows]
    await session.execute(EXPIRE, {"ids": ids, "now": now})
    await outbox.cancel(session, refs=ids)
    created = [r.subject_id for r in rows if r.created_subject and r.subject_id is not None]
    if created:
        alone = (await session.execute(ATTEMPT_ONLY, {"ids": created})).scalars().all()
        for subject_id in alone:
            subject = await session.get(Subject, subject_id)
            assert subject is not None
            await erasure.erase_subject(session, EXPIRY, subject)
    return len(rows)
