"""Signed links to the person's own pages, and who acts through them: the person, on the
key that minted the link (app.core.link_tokens makes and checks the tokens)."""

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.config import Settings
from app.core.errors import Conflict, ServiceUnavailable
from app.core.link_tokens import LinkClaims, sign_link
from app.models.base import utcnow
from app.models.link import ONE_CLICK, EmailHeaders, LinkCreate, LinkPublic
from app.services.audit import entries as audit
from app.services.catalogue import entries as catalogue
from app.services.subjects import records as subjects

# Audit entries and consent events name this actor: the person holding a signed link. Its
# key id is the API key that minted the link (zero for links minted before that was kept).
PERSON = Principal(
    key_id=uuid.UUID(int=0), name="person (signed link)", role="subject", scopes=frozenset()
)
# Which keys may put a preference-page URL in an e-mail: the page shows the person's data
# and acts for them, so only the CRM, which holds that data anyway, may mint one.
PREFERENCE_LINK_SCOPE = "links:preference"


def link_holder(claims: LinkClaims) -> Principal:
    """The actor of whatever is done through this link: the person, on the minting key."""
    return replace(PERSON, key_id=claims.minted_by or PERSON.key_id)


def _expiry(days: int) -> datetime:
    return (utcnow() + timedelta(days=days)).replace(microsecond=0)


async def issue_links(
    session: AsyncSession,
    principal: Principal,
    *,
    subject_id: uuid.UUID,
    data: LinkCreate,
    settings: Settings,
) -> LinkPublic:
    """Sign an unsubscribe link for a live subject (and a purpose), and a preference link
    where the caller may mint one (PREFERENCE_LINK_SCOPE). Each carries the caller's key id."""
    subject = await _linkable_subject(session, subject_id, data.purpose, settings)
    base = settings.public_base_url.rstrip("/")
    expiries = {"u": _expiry(settings.unsubscribe_link_days)}
    if PREFERENCE_LINK_SCOPE in principal.scopes:
        expiries["p"] = _expiry(settings.preference_link_days)
    tokens = {
        kind: sign_link(
            settings,
            kind=kind,  # type: ignore[arg-type]
            subject_id=subject.id,
            email_hash=subject.email_hash,
            purpose=data.purpose,
            expires_at=int(at.timestamp()),
            minted_by=principal.key_id,
            email_hash_key=subject.email_hash_key,
        )
        for kind, at in expiries.items()
    }
    await audit.record(
        session,
        principal,
        "link.create",
        "subject",
        subject.id,
        purpose=data.purpose,
        unsubscribe_expires_at=expiries["u"].isoformat(),
        preference_expires_at=expiries["p"].isoformat() if "p" in expiries else None,
    )
    return _links(base, expiries, tokens)


async def _linkable_subject(
    session: AsyncSession, subject_id: uuid.UUID, purpose: str | None, settings: Settings
) -> Any:
    """The subject, refused unless links to this service can reach it and name its purpose."""
    if settings.env != "development" and not settings.public_base_url.startswith("https://"):
        raise ServiceUnavailable(
            "Set CONSENT_PUBLIC_BASE_URL to this service's public https:// address."
        )
    subject = await subjects.get_subject(session, subject_id)
    if subject.erased_at is not None or subject.email_hash is None:
        raise Conflict("The subject has been erased or has no e-mail address.")
    subjects.refuse_merged(subject)
    if purpose is not None:
        await catalogue.require_purposes(session, [purpose])
    return subject


def _links(base: str, expiries: dict[str, datetime], tokens: dict[str, str]) -> LinkPublic:
    unsubscribe_url = f"{base}/u/{tokens['u']}"
    return LinkPublic(
        unsubscribe_url=unsubscribe_url,
        unsubscribe_expires_at=expiries["u"],
        preference_url=f"{base}/p/{tokens['p']}" if "p" in tokens else None,
        preference_expires_at=expiries.get("p"),
        headers=EmailHeaders.model_validate(
            {"List-Unsubscribe": f"<{unsubscribe_url}>", "List-Unsubscribe-Post": ONE_CLICK}
        ),
    )
