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
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.driver import Conn, UnitOfWork, connection_of
from app.core.errors import Conflict, NotFound, Unprocessable
from app.models.base import utcnow
from app.models.consent import (
    GPC_PURPOSE,
    UNSPECIFIED_METHOD,
    ConsentEventCreate,
    ConsentEventCreated,
    Evidence,
)
from app.models.controller import ControllerPublic
from app.services.catalogue import controller as controller_identity
from app.services.catalogue.known import unknown_key
from app.services.consent import double_opt_in
from app.services.consent.reading import event_document
from app.services.consent.receipts import build_receipt
from app.services.consent.statements import (
    CURRENT,
    LOOKUP,
    LOOKUP_AND_WRITE,
    OBJECT,
    WRITE,
)
from app.services.subjects import records as subjects

CLOCK_SKEW = timedelta(minutes=5)


@dataclass
class Context:
    subject_id: uuid.UUID
    email_hash: str | None
    description: str
    direct_marketing: bool
    policy_url: str | None
    third_parties: list[str]
    controller: ControllerPublic | None = None  # None: no receipt is built
    created: bool = False  # this request created the subject (a web form's prospect)

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
            controller_identity.parse(lookup.controller),
        )


async def _refuse_unknown(
    con: Conn,
    data: ConsentEventCreate,
    purpose_key: str | None,
    policy_version: str | None,
    recipient_key: str | None,
) -> None:
    """422 for what the request names that the catalogue does not know, in this order,
    listing the known keys (read only then: the lookup already said what is unknown)."""
    if purpose_key is None:
        raise await unknown_key(con, "purpose", data.purpose, field="purpose")
    if data.policy_version is not None and policy_version is None:
        raise await unknown_key(con, "policy_version", data.policy_version, field="policy_version")
    if data.recipient is not None and recipient_key is None:
        raise await unknown_key(con, "recipient", data.recipient, field="recipient")


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
    await _refuse_unknown(con, data, row.purpose_key, row.policy_version, row.recipient_key)
    subject_id, email_hash = row.subject_id, row.email_hash
    if subject_id is None:
        subject_id, email_hash = await _new_web_subject(con, principal, data)
    elif row.erased_at is not None:
        raise Conflict("The subject has been erased.")
    else:
        subjects.refuse_merged(row)
    ctx = Context.of(subject_id, email_hash, row)
    ctx.created = row.subject_id is None
    return ctx


async def _new_web_subject(
    con: Conn, principal: Principal, data: ConsentEventCreate
) -> tuple[uuid.UUID, str | None]:
    """A web form's consent from an unknown e-mail creates the prospect in the same call."""
    if data.email is None or data.action != "given" or principal.role != "website":
        raise NotFound("No such subject.")
    return await subjects.create_web_prospect(con, principal, data.email)


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
    event_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    evidence = evidence or Evidence()
    notice_sha = hashlib.sha256(notice_text.encode()).hexdigest() if notice_text else None
    return {
        "id": event_id,  # None: a time-ordered id, made by the statement (statements.py)
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


async def write_event(con: Conn, principal: Principal, ctx: Context, **event: Any) -> Any:
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
        await _refuse_unknown(
            con, data, row.purpose_key, row.known_policy_version, row.recipient_key
        )
        controller_identity.parse(row.controller)  # no receipt without a controller
        if row.known_subject_id is None:
            raise NotFound("No such subject.")
        if row.known_merged_into is not None:
            subjects.refuse_merged(SimpleNamespace(merged_into=row.known_merged_into))
        raise Conflict("The subject has been erased.")
    return Context.of(row.known_subject_id, row.known_email_hash, row), row


def _gpc_conflict(current: Any | None, same_request: uuid.UUID | None) -> str | None:
    """What a GPC withdrawal overrides, if it contradicts an explicit consent."""
    if current is None or current.status != "given":
        return None
    if current.event_id == same_request:
        return "GPC signal overrides the consent given in the same request"
    return "GPC signal overrides an earlier explicit consent"


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
    return await write_event(
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
        conflict=_gpc_conflict(current, same_request),
    )


def unit_of_work(data: ConsentEventCreate, gpc: bool) -> UnitOfWork:
    """A consent for a known subject id, without GPC, is one statement (atomic by itself);
    GPC, web-form prospects and double opt-in write several statements that go together."""
    if data.subject_id is None or gpc or data.method == "gpc" or data.confirm_by_email:
        return UnitOfWork.TRANSACTION
    return UnitOfWork.STATEMENT


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


def _occurred_at(data: ConsentEventCreate) -> datetime:
    """When the consent was given or withdrawn: as stated (never in the future), or now."""
    now = utcnow()
    occurred_at = data.occurred_at or now
    if occurred_at > now + CLOCK_SKEW:
        raise Unprocessable("`occurred_at` is in the future.", field="occurred_at")
    return occurred_at


def _created_document(row: Any, ctx: Context, signal: Any | None) -> dict[str, Any]:
    """The ConsentEventCreated document: the event with its receipt, and the GPC withdrawal
    recorded along with it, if any."""
    assert ctx.controller is not None  # Context.of read it with the lookup
    receipt = build_receipt(
        row,
        purpose_description=ctx.description,
        direct_marketing=ctx.direct_marketing,
        policy_url=ctx.policy_url,
        third_parties=ctx.third_parties,
        controller=ctx.controller,
    )
    extra = [event_document(signal)] if signal is not None else []
    return {**event_document(row), "receipt": receipt, "also_recorded": extra}


async def consent_payload(
    con: Conn | AsyncSession,
    principal: Principal,
    *,
    data: ConsentEventCreate,
    gpc: bool = False,
) -> dict[str, Any]:
    """Append a consent event, move the current state, and return it with its receipt
    (the ConsentEventCreated document). On a bare connection in autocommit mode, only
    when `unit_of_work` says it is one statement."""
    occurred_at = _occurred_at(data)
    driver = await connection_of(con)
    if data.confirm_by_email:
        return await _pending_payload(driver, principal, data, gpc=gpc)
    signal = None  # a GPC header's withdrawal, recorded after the requested event
    if unit_of_work(data, gpc) is UnitOfWork.STATEMENT:  # a subject id, no GPC
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
        row = await write_event(driver, principal, ctx, **_requested_event(data, occurred_at))
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
    return _created_document(row, ctx, signal)


async def _pending_payload(
    con: Conn, principal: Principal, data: ConsentEventCreate, *, gpc: bool
) -> dict[str, Any]:
    """Double opt-in: the pending request and its e-mail, no consent (the ConsentEventPending
    document). A GPC header still withdraws and objects at once: it needs no confirmation."""
    ctx = await _context(con, principal, data)
    pending = await double_opt_in.request_confirmation(
        con, principal, data, subject_id=ctx.subject_id, created_subject=ctx.created
    )
    signal = None
    if gpc:
        signal = await _gpc_withdrawal(
            con,
            principal,
            ctx,
            same_request=None,
            always=False,
            evidence=None,
            occurred_at=utcnow(),
        )
    pending["also_recorded"] = [event_document(signal)] if signal is not None else []
    return pending
