"""What the person confirms from a link the service e-mailed (`/c/{token}`): a double
opt-in (kind `c`: the pending consent becomes a consent) or a rights request started from
the preference page (kind `r`: its identity is verified, method `email_link`).

A GET shows what would be confirmed and changes nothing; only the page's POST confirms.
A confirmation that no longer applies (expired, erased, the address changed, already done)
changes nothing either."""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import Settings
from app.core.driver import connection_of
from app.core.errors import Conflict, NotFound
from app.core.keys import KeyUse, keyed_hash
from app.core.link_tokens import LinkClaims
from app.models.base import utcnow
from app.models.consent import Evidence
from app.models.rights import RightsRequest, VerifyIdentity
from app.services.consent import events as consent
from app.services.person.links import link_holder
from app.services.person.pages import REQUEST_TYPES, LinkGone, _live_subject
from app.services.rights import requests as rights

PENDING = text("""
SELECT d.*, p.description FROM double_opt_ins d JOIN purposes p ON p.key = d.purpose
WHERE d.id = :id AND d.subject_id = :s
""")
PENDING_LOCKED = text("SELECT * FROM double_opt_ins WHERE id = :id AND subject_id = :s FOR UPDATE")
CONFIRMED = text("""
UPDATE double_opt_ins SET state = 'confirmed', confirmed_at = :now,
  confirmed_user_agent = :ua, confirmed_ip_hash = :ip
WHERE id = :id
""")
EMAIL_LINK_NOTE = "confirmed from the link e-mailed to the address"


@dataclass
class Shown:
    """What the confirmation page shows."""

    kind: str  # consent | request
    title: str
    notice_text: str | None = None
    policy_version: str | None = None
    recipient: str | None = None
    done: bool = False  # already confirmed: the page says so and offers no button


def _gone(row: Any, now: datetime) -> bool:
    """Nothing left to confirm: unknown, expired, or past its time and not yet swept."""
    return (
        row is None or row.state == "expired" or (row.state == "pending" and row.expires_at <= now)
    )


def _request(row: Any) -> dict[str, Any]:
    return json.loads(row.request) if isinstance(row.request, str) else dict(row.request)


async def shown(session: AsyncSession, claims: LinkClaims, *, now: datetime | None = None) -> Shown:
    """What the link confirms, or LinkGone when it no longer can."""
    if claims.kind == "r":
        req = await _rights_request(session, claims)
        return Shown(
            "request", REQUEST_TYPES.get(req.type, req.type), done=req.status != "received"
        )
    row = (await session.execute(PENDING, {"id": claims.ref, "s": claims.subject_id})).first()
    if row is None or _gone(row, now or utcnow()):
        raise LinkGone
    await _live_subject(session, claims)
    request = _request(row)
    return Shown(
        "consent",
        row.description,
        notice_text=request["notice_text"],
        policy_version=request["policy_version"],
        recipient=request["recipient"],
        done=row.state == "confirmed",
    )


def _recorder(request: dict[str, Any]) -> Principal:
    """The key that asked for the consent records it (the person's part is the evidence)."""
    key_id = uuid.UUID(request["key_id"]) if request["key_id"] else None
    return Principal(key_id, request["key_name"], request["key_role"], frozenset())


async def confirm_consent(
    session: AsyncSession,
    settings: Settings,
    claims: LinkClaims,
    *,
    user_agent: str | None,
    ip: str | None,
    now: datetime | None = None,
) -> bool:
    """The pending consent becomes a consent (the one consent write, with the pending id),
    and the confirmation's evidence is kept. True when confirmed now, False when it already
    was. LinkGone when expired, erased or the address changed."""
    now = now or utcnow()
    row = (
        await session.execute(PENDING_LOCKED, {"id": claims.ref, "s": claims.subject_id})
    ).first()
    if row is None or _gone(row, now):
        raise LinkGone
    if row.state == "confirmed":
        return False
    subject = await _live_subject(session, claims)
    request = _request(row)
    ctx = consent.Context(subject.id, subject.email_hash, "", False, None, [])
    written = await consent.write_event(
        await connection_of(session),
        _recorder(request),
        ctx,
        event_id=row.id,
        purpose=row.purpose,
        recipient=request["recipient"],
        action="given",
        method=request["method"],
        policy=request["policy_version"],
        notice_text=request["notice_text"],
        evidence=Evidence.model_validate(request["evidence"] or {}),
        occurred_at=now,  # a double opt-in's consent is given when it is confirmed
    )
    assert written.id == row.id
    ip_hash = keyed_hash(settings, KeyUse.CONFIRMATION_IPS, ip) if ip else None
    await session.execute(
        CONFIRMED,
        {"id": row.id, "now": now, "ua": (user_agent or "")[:1000] or None, "ip": ip_hash},
    )
    return True


async def _rights_request(session: AsyncSession, claims: LinkClaims) -> RightsRequest:
    await _live_subject(session, claims)  # erased, or the address changed: gone
    req = await session.get(RightsRequest, claims.ref)
    if req is None or req.subject_id != claims.subject_id:
        raise LinkGone
    return req


async def confirm_request(session: AsyncSession, claims: LinkClaims) -> bool:
    """The rights request's identity is verified (method `email_link`): only the holder of
    the mailbox could press the button. True when verified now, False when it already was."""
    req = await _rights_request(session, claims)
    if req.status != "received":
        return False
    assert claims.ref is not None
    # `email_link` is the service's own method: clients cannot claim it, so the API's model
    # does not accept it; the request is built here, past that validation.
    data = VerifyIdentity.model_construct(method="email_link", note=EMAIL_LINK_NOTE)  # type: ignore[arg-type]
    try:
        await rights.verify_identity(session, link_holder(claims), request_id=claims.ref, data=data)
    except (Conflict, NotFound):  # moved on meanwhile (a concurrent verification)
        return False
    return True
