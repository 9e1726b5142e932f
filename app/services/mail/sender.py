"""The background sender of the e-mail outbox (one per database: the outbox's advisory
lock). Each run takes the due messages, signs each link with the subject's current address
hash, and hands the batch to the SMTP server over one connection. A message the server took
is `sent`; a failure leaves it pending with back-off (nothing is lost across a restart: the
row is the message). A message that no longer applies (the subject erased or their address
changed, the consent confirmed or expired, the request moved on) is cancelled, not sent.
Logs name message ids and counts, never an address."""

import logging
import uuid
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.link_tokens import sign_link
from app.models.base import utcnow
from app.models.controller import ControllerPublic
from app.services.catalogue import controller as controller_identity
from app.services.mail import messages, outbox
from app.services.person.pages import REQUEST_TYPES

log = logging.getLogger("consent_api.mail")
SMTP_TIMEOUT = 20.0


def _smtp(settings: Settings) -> aiosmtplib.SMTP:
    """A client for CONSENT_SMTP_URL: smtps:// is TLS from the start; smtp:// upgrades with
    STARTTLS whenever the server offers it (start_tls=None)."""
    assert settings.smtp_url is not None
    url = urlsplit(settings.smtp_url.get_secret_value())
    tls = url.scheme == "smtps"
    return aiosmtplib.SMTP(
        hostname=url.hostname or "localhost",
        port=url.port or (465 if tls else 587),
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        use_tls=tls,
        start_tls=None if not tls else False,
        timeout=SMTP_TIMEOUT,
    )


def _expiry(row: Any, settings: Settings) -> datetime:
    if row.kind == "double_opt_in":
        return row.doi_expires_at
    return row.created_at + timedelta(days=settings.double_opt_in_days)


def _applies(row: Any, settings: Settings, now: datetime) -> bool:
    """Still worth sending: the person is there at the same address and there is something
    left to confirm before the link would expire."""
    if row.erased_at is not None or row.email is None or _expiry(row, settings) <= now:
        return False
    if row.kind == "double_opt_in":
        return row.doi_state == "pending" and row.doi_email_hash == row.email_hash
    return row.request_status == "received"


def _link(row: Any, settings: Settings) -> str:
    token = sign_link(
        settings,
        kind="c" if row.kind == "double_opt_in" else "r",
        subject_id=row.subject_id,
        email_hash=row.email_hash,
        purpose=row.purpose,
        expires_at=int(_expiry(row, settings).timestamp()),
        email_hash_key=row.email_hash_key,
        ref=row.ref,
    )
    return f"{settings.public_base_url.rstrip('/')}/c/{token}"


def compose(row: Any, settings: Settings, controller: ControllerPublic) -> EmailMessage:
    days = settings.double_opt_in_days
    link, ref = _link(row, settings), uuid.UUID(str(row.ref))
    if row.kind == "double_opt_in":
        return messages.double_opt_in(
            controller, row.email, ref, row.purpose_description, link, days
        )
    wanted = REQUEST_TYPES.get(row.request_type, row.request_type)
    return messages.rights_request(controller, row.email, ref, wanted, link, days)


async def _send(settings: Settings, batch: list[tuple[Any, EmailMessage]]) -> tuple[list, list]:
    """(sent ids, failed ids): one connection for the batch; a refused message fails alone."""
    done: list[uuid.UUID] = []
    try:
        async with _smtp(settings) as smtp:
            for row, msg in batch:
                try:
                    await smtp.send_message(msg)
                except aiosmtplib.SMTPRecipientsRefused:
                    continue  # retried later like any failure
                done.append(row.id)
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning("SMTP failed; retried", extra={"error": type(exc).__name__})
    return done, [row.id for row, _ in batch if row.id not in done]


async def send_batch(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """One batch in the caller's transaction; how many the server took."""
    rows = await outbox.due(session, now)
    stale = [r.id for r in rows if not _applies(r, settings, now)]
    await outbox.cancel(session, ids=stale)
    live = [r for r in rows if r.id not in stale]
    if not live:
        return 0
    controller = await controller_identity.identity(session)
    done, failed = await _send(settings, [(r, compose(r, settings, controller)) for r in live])
    await outbox.sent(session, done, utcnow())
    await outbox.failed(session, failed, now, "smtp")
    return len(done)
