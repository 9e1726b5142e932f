"""MailChimp's webhook events (form-encoded): an unsubscribe is an opt-out at once, a
cleaned address and an address changed in MailChimp are recorded for the subject and the
CRM; subscribe and profile change nothing (a MailChimp subscribe is not proof of consent).
A replay of the same event changes nothing twice."""

import json
import uuid
from datetime import UTC, datetime

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import current_settings
from app.core.crypto import email_hash
from app.core.errors import Unprocessable
from app.core.keys import KeyUse, keyed_hash
from app.core.pagination import Page, decode_time_cursor, encode_time_cursor, page_of
from app.models.sync import MailchimpEventPublic, WebhookAnswer
from app.models.text import Email, unsafe_characters
from app.services.audit import entries as audit
from app.services.changes import feed as changes
from app.services.optouts import records as optouts
from app.services.sync import system_principal

WEBHOOK = system_principal("mailchimp-webhook")
RECORDED_TYPES = {"unsubscribe", "cleaned", "upemail"}
MAX_FIELD = 254
# The fields read from a recorded event (besides the addresses): single lines, checked like
# names (app.models.text) before anything is stored.
TEXT_FIELDS = ("fired_at", "data[list_id]", "data[reason]")
EMAIL = TypeAdapter(Email)

INSERT_EVENT = text("""
INSERT INTO mailchimp_events (id, event_key, type, list_id, subject_id, email_hash, reason,
                              old_email, new_email, fired_at, received_at)
VALUES (:id, :key, :type, :list_id, :subject_id, :email_hash, :reason, :old_email,
        :new_email, :fired_at, clock_timestamp())
ON CONFLICT (event_key) DO NOTHING
RETURNING id
""")
LIVE_SUBJECT = text("SELECT id FROM subjects WHERE email = :e AND erased_at IS NULL")


def _event_key(form: dict[str, str]) -> str:
    """A keyed hash of the whole payload: the same event delivered twice has the same key,
    and the key reveals nothing of the address inside it."""
    canonical = json.dumps(sorted(form.items()), separators=(",", ":"))
    return keyed_hash(current_settings(), KeyUse.MAILCHIMP_EVENTS, canonical)


def _fired_at(value: str | None) -> datetime | None:
    """MailChimp sends `2009-03-26 21:35:57` (UTC); anything else is kept as unknown."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_text(form: dict[str, str], field: str) -> None:
    bad = unsafe_characters(form.get(field) or "")
    if bad:
        raise Unprocessable(
            f"`{field}` contains control or invisible characters ({', '.join(bad[:3])}).",
            field=field,
        )


def _email(form: dict[str, str], field: str) -> str | None:
    """The address as the API accepts one (a bare `local@domain`, normalised), or None."""
    value = (form.get(field) or "").strip()
    if not value:
        return None
    if len(value) > MAX_FIELD:
        raise Unprocessable(f"`{field}` is not an e-mail address.", field=field)
    try:
        return str(EMAIL.validate_python(value))
    except ValidationError:  # the value is never quoted back
        raise Unprocessable(f"`{field}` is not an e-mail address.", field=field) from None


async def _subject_for(session: AsyncSession, email: str | None) -> uuid.UUID | None:
    if email is None:
        return None
    return (await session.execute(LIVE_SUBJECT, {"e": email})).scalar_one_or_none()


async def handle(session: AsyncSession, form: dict[str, str]) -> WebhookAnswer:
    """One delivered event: checked, recorded once (keyed by its payload), then acted on."""
    _check_text(form, "type")
    kind = (form.get("type") or "").strip()
    if not kind:
        raise Unprocessable("A MailChimp event needs `type`.", field="type")
    if kind not in RECORDED_TYPES:
        # subscribe, profile, campaign...: acknowledged; consent is never inferred from them.
        return WebhookAnswer(type=kind[:40], recorded=False)
    for field in TEXT_FIELDS:
        _check_text(form, field)
    email = _email(form, "data[email]")
    old_email = _email(form, "data[old_email]")
    new_email = _email(form, "data[new_email]")
    address = old_email if kind == "upemail" else email
    if address is None:
        raise Unprocessable("The event names no e-mail address.", field="data[email]")
    subject_id = await _subject_for(session, address)
    keep_addresses = kind == "upemail" and subject_id is not None
    event_id = await _insert_event(
        session,
        form,
        kind,
        address,
        subject_id,
        old_email if keep_addresses else None,
        new_email if keep_addresses else None,
    )
    if event_id is None:
        return WebhookAnswer(type=kind, recorded=False)  # a replay
    await _act_on(session, form, kind, address, subject_id, event_id)
    return WebhookAnswer(type=kind, recorded=True)


async def _insert_event(
    session: AsyncSession,
    form: dict[str, str],
    kind: str,
    address: str,
    subject_id: uuid.UUID | None,
    old_email: str | None,
    new_email: str | None,
) -> uuid.UUID | None:
    """The event's row; None when the same event was recorded before (a replay)."""
    row = (
        await session.execute(
            INSERT_EVENT,
            {
                "id": uuid.uuid4(),
                "key": _event_key(form),
                "type": kind,
                "list_id": (form.get("data[list_id]") or None) and form["data[list_id]"][:64],
                "subject_id": subject_id,
                "email_hash": email_hash(address),
                "reason": (form.get("data[reason]") or None) and form["data[reason]"][:100],
                "old_email": old_email,
                "new_email": new_email,
                "fired_at": _fired_at(form.get("fired_at")),
            },
        )
    ).first()
    return None if row is None else row.id


async def _act_on(
    session: AsyncSession,
    form: dict[str, str],
    kind: str,
    address: str,
    subject_id: uuid.UUID | None,
    event_id: uuid.UUID,
) -> None:
    """A newly recorded event's effect: an unsubscribe is the person's opt-out (the list's
    webhook leaves out calls made through the API, so the worker's own never arrive here:
    `consent-api sync mailchimp --setup-webhook`); a cleaned or changed address goes to
    the change feed, audited."""
    if kind == "unsubscribe":
        await optouts.record_optout_hash(
            session,
            WEBHOOK,
            email_hash=email_hash(address),
            channel="email",
            source="mailchimp",
            reason=f"MailChimp unsubscribe ({form.get('data[reason]') or 'no reason given'})"[:500],
        )
    else:
        await changes.append(
            session, f"mailchimp.{kind}", subject_id=subject_id, email_hash=email_hash(address)
        )
        await audit.record(
            session,
            WEBHOOK,
            f"mailchimp.{kind}",
            "mailchimp_event",
            event_id,
            subject_id=str(subject_id),
        )


async def list_events(
    session: AsyncSession,
    *,
    subject_id: uuid.UUID | None,
    type_: str | None,
    limit: int,
    cursor: str | None,
) -> Page[MailchimpEventPublic]:
    after_at, after_id = decode_time_cursor(cursor) or (None, None)
    rows = (
        await session.execute(
            text(
                "SELECT * FROM mailchimp_events"
                " WHERE (CAST(:s AS uuid) IS NULL OR subject_id = :s)"
                " AND (CAST(:t AS text) IS NULL OR type = :t)"
                " AND (CAST(:at AS timestamptz) IS NULL OR (received_at, id) > (:at, :id))"
                " ORDER BY received_at, id LIMIT :n"
            ),
            {"s": subject_id, "t": type_, "at": after_at, "id": after_id, "n": limit + 1},
        )
    ).all()
    return page_of(
        rows,
        limit,
        lambda r: encode_time_cursor(r.received_at, r.id),
        lambda r: MailchimpEventPublic.model_validate(r._mapping),
    )
