"""The person's own door (§10, Art 7(3), Art 21(2)-(3), PECR reg 22): signed links, the
one-click unsubscribe and the preference page.

Every change goes through the ordinary services (consent events, opt-outs, rights
requests), so it is audited and in the change feed exactly like one made through the API.
The actor is the person holding the signed link, not an API key.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.crypto import email_hashes
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.link_tokens import LinkClaims
from app.models.base import utcnow
from app.models.consent import ConsentEventCreate, EvidenceCreate
from app.models.rights import OPEN_STATUSES, RightsRequestCreate
from app.models.subject import Subject
from app.models.text import replace_unsafe
from app.services.catalogue import controller as controller_identity
from app.services.consent import events as consent
from app.services.gate.decisions import CONSENT_EXPIRES_AT
from app.services.mail import outbox as mail_outbox
from app.services.optouts import records as optouts
from app.services.person import transfers
from app.services.person.links import link_holder
from app.services.person.transfers import TransferRow
from app.services.person.wording import consent_period, notice_sha, notice_text, plain
from app.services.rights import requests as rights
from app.services.subjects import records as subjects

ONE_CLICK_REASON = "one-click unsubscribe (RFC 8058)"
PAGE_FORM_ID = "preference-page"
# The rights a person can start from the page, in plain words (withdrawing consent and
# objecting to marketing have buttons of their own, but are offered here too).
REQUEST_TYPES: dict[str, str] = {
    "access": "Send me a copy of the data you hold about me",
    "rectification": "Correct data you hold about me",
    "erasure": "Erase the data you hold about me",
    "portability": "Give me my data in a portable format",
    "restriction": "Stop using my data while a question is settled",
    "object_marketing": "Object to direct marketing",
    "object_processing": "Object to other processing based on your legitimate interests",
}


class LinkGone(Exception):
    """The link is genuine but no longer leads to anyone (erased, or the e-mail changed)."""


async def unsubscribe(session: AsyncSession, claims: LinkClaims) -> bool:
    """RFC 8058: opt the e-mail the link was made for out of marketing e-mail. Keyed by the
    e-mail's hash, so it works after erasure too. True when new, False on a repeat."""
    reason = ONE_CLICK_REASON + (f" from {claims.purpose}" if claims.purpose else "")
    hashed, key_id = await _optout_hash(session, claims)
    _, created = await optouts.record_optout_hash(
        session,
        link_holder(claims),
        email_hash=hashed,
        email_hash_key=key_id,
        channel="email",
        source="email_link",
        reason=reason,
    )
    return created


async def _optout_hash(session: AsyncSession, claims: LinkClaims) -> tuple[str, int]:
    """The hash an opt-out from this link is stored under: the live subject's own while the
    link was made for its current address (the hash key may have rotated since the link
    was sent); otherwise (erased, or the address changed) the one the link carries."""
    subject = await session.get(Subject, claims.subject_id)
    if subject is not None and subject.erased_at is None and _same_address(subject, claims):
        return str(subject.email_hash), subject.email_hash_key
    return claims.email_hash, claims.email_hash_key


def _same_address(subject: Any, claims: LinkClaims) -> bool:
    """The link was made for the subject's current address, under whichever hash key."""
    return subject.email is not None and claims.email_hash in email_hashes(subject.email)


@dataclass
class PurposeRow:
    key: str
    recipient: str | None
    recipient_name: str | None
    description: str
    status: str | None  # given | withdrawn | None (never asked)
    since: datetime | None
    direct_marketing: bool
    can_give: bool
    notice: str | None = None
    notice_sha256: str | None = None
    period: str | None = None  # "Your consent lasts 24 months." (None: until withdrawn)
    expires_at: datetime | None = None  # a given consent's end, where the purpose sets one
    expired: bool = False  # given, but its period has run out: the person may agree again


@dataclass
class PageData:
    name: str | None
    email: str
    purpose: str | None
    policy_version: str | None
    purposes: list[PurposeRow]
    optout_channels: list[str]
    requests: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[TransferRow] = field(default_factory=list)
    controller: dict[str, Any] = field(default_factory=dict)  # who the page says we are


async def _live_subject(session: AsyncSession, claims: LinkClaims) -> Any:
    """The subject, only while it is live and still has the e-mail the link was sent to: an
    old address (perhaps someone else's now) never sees the new one's data."""
    try:
        subject = await subjects.get_subject(session, claims.subject_id)
    except NotFound:
        raise LinkGone from None
    if subject.erased_at is not None or not _same_address(subject, claims):
        raise LinkGone
    return subject


async def current_policy(session: AsyncSession) -> str | None:
    return (
        await session.execute(
            text(
                "SELECT version FROM policies"
                " ORDER BY published_at DESC NULLS LAST, created_at DESC LIMIT 1"
            )
        )
    ).scalar_one_or_none()


PURPOSES_WITH_STATE = text(f"""
SELECT p.key, p.description, p.direct_marketing, 'consent' = ANY (p.allowed_bases) AS by_consent,
       nullif(cs.recipient, '') AS recipient, r.name AS recipient_name, cs.status, cs.occurred_at,
       p.consent_valid_months, e.expires_at, coalesce(e.expires_at <= now(), false) AS expired
FROM purposes p
LEFT JOIN consent_state cs ON cs.purpose = p.key AND cs.subject_id = :s
LEFT JOIN recipients r ON r.key = nullif(cs.recipient, '')
-- The gate's own instant (decisions.CONSENT_EXPIRES_AT), for a given consent only.
LEFT JOIN LATERAL (SELECT {CONSENT_EXPIRES_AT.format(state="cs", purpose="p")} AS expires_at
                   WHERE cs.status = 'given') e ON true
WHERE (cs.subject_id IS NOT NULL OR 'consent' = ANY (p.allowed_bases))
  AND p.key <> 'international_transfer'  -- transfer consents: a section of their own
ORDER BY p.key, cs.recipient
""")  # noqa: S608 - constant SQL


async def page_data(session: AsyncSession, claims: LinkClaims) -> PageData:
    subject = await _live_subject(session, claims)
    controller = await controller_identity.shown(session)
    rows = (await session.execute(PURPOSES_WITH_STATE, {"s": subject.id})).all()
    purposes = [row for r in rows if (row := _shown_purpose(r, controller["name"])) is not None]
    # The purpose the e-mail was about comes first.
    purposes.sort(key=lambda p: p.key != claims.purpose)
    channels = (
        await session.execute(
            text(
                "SELECT DISTINCT channel FROM marketing_optouts"
                " WHERE email_hash = ANY(CAST(:h AS text[])) ORDER BY channel"
            ),
            {"h": email_hashes(subject.email)},
        )
    ).scalars()
    requests = (
        await session.execute(
            text(
                "SELECT type, status, received_at, due_at FROM rights_requests"
                " WHERE subject_id = :s ORDER BY received_at DESC LIMIT 20"
            ),
            {"s": subject.id},
        )
    ).all()
    return PageData(
        name=subject.name,
        email=subject.email,
        purpose=claims.purpose,
        policy_version=await current_policy(session),
        purposes=purposes,
        optout_channels=list(channels),
        requests=[
            {
                **r._mapping,
                "label": REQUEST_TYPES.get(r.type, r.type.replace("_", " ")),
                # Only an open request still has a deadline to show.
                "open": r.status in OPEN_STATUSES,
            }
            for r in requests
        ],
        transfers=await transfers.transfer_rows(session, subject.id, controller["name"]),
        controller=controller,
    )


def _shown_purpose(r: Any, controller: str) -> PurposeRow | None:
    """A PURPOSES_WITH_STATE row as the page shows it; None when it has no state and the
    person cannot give consent to it here."""
    # An expired consent is no consent (the gate's `consent_expired`): the person may agree
    # again, which starts a new period.
    can_give = r.by_consent and (r.status != "given" or r.expired)
    row = PurposeRow(
        key=r.key,
        recipient=r.recipient,
        recipient_name=r.recipient_name,
        description=plain(r.description),
        status=r.status,
        since=r.occurred_at,
        direct_marketing=r.direct_marketing,
        can_give=can_give,
        period=consent_period(r.consent_valid_months),
        expires_at=r.expires_at,
        expired=r.expired,
    )
    if can_give:
        row.notice = notice_text(controller, r.description)
        row.notice_sha256 = notice_sha(row.notice)
    return row if row.status is not None or can_give else None


def _evidence(settings: Settings, user_agent: str | None) -> EvidenceCreate:
    # The page's address without its token: the token is a credential, never stored. The
    # person did nothing wrong if their browser (or something on the way) sent control or
    # bidi characters in its User-Agent: those are replaced by U+FFFD, never refused.
    return EvidenceCreate(
        form_id=PAGE_FORM_ID,
        page_url=settings.public_base_url.rstrip("/") + "/p/",
        user_agent=(user_agent or None) and replace_unsafe(user_agent[:1000]),
    )


async def withdraw(
    session: AsyncSession,
    claims: LinkClaims,
    settings: Settings,
    *,
    purpose: str,
    recipient: str | None,
    user_agent: str | None,
) -> None:
    subject = await _live_subject(session, claims)
    status = (
        await session.execute(
            text(
                "SELECT status FROM consent_state WHERE subject_id = :s AND purpose = :p"
                " AND recipient = :r"
            ),
            {"s": subject.id, "p": purpose, "r": recipient or ""},
        )
    ).scalar_one_or_none()
    if status != "given":  # a second click, or a stale page: nothing to withdraw
        return
    data = ConsentEventCreate.model_validate(
        {
            "subject_id": subject.id,
            "purpose": purpose,
            "recipient": recipient or None,
            "action": "withdrawn",
            "method": "web_form",
            "evidence": _evidence(settings, user_agent),
        }
    )
    await consent.record_consent(session, link_holder(claims), data=data)


@dataclass
class Shown:
    """The notice as it reads now, and the digest and policy version the page showed."""

    notice: str
    sha256: str
    policy: str


async def give(
    session: AsyncSession,
    claims: LinkClaims,
    settings: Settings,
    *,
    purpose: str,
    shown_sha256: str,
    shown_policy: str,
    user_agent: str | None,
) -> None:
    """Give consent back with the wording shown and the policy version shown; if either
    changed since the page was rendered, nothing is recorded and the person sees the new one."""
    subject = await _live_subject(session, claims)
    description = (
        await session.execute(
            text(
                "SELECT description FROM purposes WHERE key = :k AND 'consent' = ANY(allowed_bases)"
                " AND key <> 'international_transfer'"
            ),
            {"k": purpose},
        )
    ).scalar_one_or_none()
    if description is None:  # the transfer consent names its recipient: `give_transfer`
        raise Unprocessable("This choice cannot be given here.")
    controller = (await controller_identity.identity(session)).name
    shown = Shown(notice_text(controller, description), shown_sha256, shown_policy)
    await _give_as_shown(session, claims, settings, subject, purpose, None, shown, user_agent)


async def give_transfer(
    session: AsyncSession,
    claims: LinkClaims,
    settings: Settings,
    *,
    recipient: str,
    shown_sha256: str,
    shown_policy: str,
    user_agent: str | None,
) -> None:
    """The explicit transfer consent (§8, Art 49(1)(a)) to one recipient outside the EEA/UK,
    with the wording shown, which names the recipient, the country and the risks."""
    subject = await _live_subject(session, claims)
    controller = (await controller_identity.identity(session)).name
    notice = await transfers.notice_for(session, controller, recipient)
    if notice is None:
        raise Unprocessable("This choice cannot be given here.")
    shown = Shown(notice, shown_sha256, shown_policy)
    await _give_as_shown(
        session, claims, settings, subject, transfers.TRANSFER_PURPOSE, recipient, shown, user_agent
    )


async def _give_as_shown(
    session: AsyncSession,
    claims: LinkClaims,
    settings: Settings,
    subject: Any,
    purpose: str,
    recipient: str | None,
    shown: Shown,
    user_agent: str | None,
) -> None:
    """Record the consent through the ordinary consent write (which also makes consent the
    basis where none is recorded), unless the wording or the policy changed meanwhile."""
    policy = await current_policy(session)
    if notice_sha(shown.notice) != shown.sha256 or policy != shown.policy:
        raise Conflict("The wording or the privacy policy changed; please read it again.")
    data = ConsentEventCreate.model_validate(
        {
            "subject_id": subject.id,
            "purpose": purpose,
            "recipient": recipient,
            "action": "given",
            "method": "web_form",
            "policy_version": policy,
            "notice_text": shown.notice,
            "evidence": _evidence(settings, user_agent),
        }
    )
    await consent.record_consent(session, link_holder(claims), data=data)


async def opt_out_all(session: AsyncSession, claims: LinkClaims) -> None:
    subject = await _live_subject(session, claims)
    await optouts.record_optout_hash(
        session,
        link_holder(claims),
        email_hash=subject.email_hash,
        email_hash_key=subject.email_hash_key,
        channel="all",
        source="email_link",
        reason="preference page: no marketing at all",
    )


async def start_request(
    session: AsyncSession, claims: LinkClaims, *, type_: str, details: str | None
) -> Any:
    """A rights request, received now and left `received`: a link proves only that someone
    holds an e-mail we sent (or a copy of it), not who they are. The person is e-mailed a
    confirmation link to the address (the e-mail outbox); only its confirmation marks the
    identity verified (method `email_link`), or the CRM verifies it as for any request."""
    subject = await _live_subject(session, claims)
    if type_ not in REQUEST_TYPES:
        raise Unprocessable("Choose one of the listed requests.")
    data = RightsRequestCreate.model_validate(
        {"type": type_, "subject_id": subject.id, "details": (details or "").strip() or None}
    )
    created = await rights.create_request(session, link_holder(claims), data=data)
    await mail_outbox.enqueue(
        session, kind="rights_request", ref=created.id, subject_id=subject.id, now=utcnow()
    )
    return created


def expires(claims: LinkClaims) -> datetime:
    return datetime.fromtimestamp(claims.expires_at, UTC)
