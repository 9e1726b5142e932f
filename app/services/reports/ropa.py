"""Record of processing activities (Art 30(1)), built from the catalogues: what the
controller processes, why, on which bases, from where, for whom, how long, how safely."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.config import Settings
from app.models.base import utcnow
from app.models.catalogue import Category, Purpose, Recipient, Source
from app.services.catalogue import controller as controller_identity
from app.services.retention import rules as retention_rules

# §3: the fields held, and no others (data minimisation).
DATA_CATEGORIES = [
    {"field": "name", "description": "Name"},
    {"field": "email", "description": "Business e-mail address"},
    {"field": "phone", "description": "Telephone number"},
    {"field": "mobile", "description": "Mobile number"},
    {"field": "job_title", "description": "Job title"},
    {"field": "company", "description": "Company"},
    {"field": "business_address", "description": "Business address"},
]


async def processing_activities(session: AsyncSession, settings: Settings) -> dict[str, Any]:
    recipients = await _catalogue(session, Recipient)
    purposes = _purposes(await _catalogue(session, Purpose), recipients)
    return {
        "article": "30(1)",
        "generated_at": utcnow().isoformat(),
        "controller": await controller_identity.shown(session),
        "purposes": purposes,
        "categories_of_subjects": [
            {"key": c.key, "description": c.description}
            for c in await _catalogue(session, Category)
        ],
        "categories_of_data": DATA_CATEGORIES,
        "sources": [
            {"key": s.key, "description": s.description} for s in await _catalogue(session, Source)
        ],
        "recipients": [_recipient(r) for r in recipients],
        "retention_rules": [
            r.model_dump(mode="json") for r in await retention_rules.list_rules(session)
        ],
        "security_measures": list(settings.security_measures),
    }


async def _catalogue(session: AsyncSession, model: Any) -> list[Any]:
    """A catalogue's entries, by key."""
    return list((await session.execute(select(model).order_by(col(model.key)))).scalars())


def _purposes(purposes: list[Any], recipients: list[Any]) -> list[dict[str, Any]]:
    """Each purpose with its bases and the recipients that receive data for it."""
    return [
        {
            "key": p.key,
            "description": p.description,
            "allowed_bases": sorted(p.allowed_bases),
            "direct_marketing": p.direct_marketing,
            # Art 5(1)(e), the ICO's advice to refresh consent: how long one given lasts.
            "consent_valid_months": p.consent_valid_months,
            "consent_period": _period(p.consent_valid_months),
            "recipients": [r.key for r in recipients if p.key in r.purposes],
        }
        for p in purposes
    ]


def _period(months: int | None) -> str:
    """The consent period in plain words, as the record reads to an auditor."""
    if months is None:
        return "Until withdrawn"
    return f"{months} month{'' if months == 1 else 's'} from when it is given, then asked again"


def _recipient(r: Any) -> dict[str, Any]:
    return {
        "key": r.key,
        "name": r.name,
        "role": r.role,
        "country": r.country,
        "inside_eea_uk": r.inside_eea_uk,
        "transfer_safeguard": r.transfer_safeguard,
        "purposes": list(r.purposes),
    }
