"""A consent event as an ISO/IEC TS 27560 consent record in JSON-LD with W3C DPV terms.

The fields are those of the DPV community group's guide "Consent Records and Receipts as per
ISO/IEC TS 27560:2023 using DPV" (https://w3id.org/dpv/guides/consent-27560, §8): schema
version, record identifier, data subject, notice and its language, process (purpose,
personal data, storage condition, data controller, legal basis, recipients, consent
change and withdrawal, jurisdiction, rights), the entity fields of the controller, and the
consent event (type, state, time, duration, by whom, how). Dublin Core terms where the
guide's examples use them. The context is inline, so the document expands without
fetching anything. Derived from the ledger on demand, like the receipt, which is attached
signed (the guide's receipt points at its records with `dpv:hasRecordOfActivity`).
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import current_settings
from app.core.errors import NotFound
from app.core.signing import Signer
from app.models.base import utcnow
from app.models.controller import ControllerPublic
from app.services.catalogue import controller as controller_identity
from app.services.consent import reading

MEDIA_TYPE = "application/ld+json"
SCHEMA = "https://w3id.org/dpv/schema/dpv-27560#record"
CONTEXT = {
    "dpv": "https://w3id.org/dpv#",
    "dct": "http://purl.org/dc/terms/",
    "pd": "https://w3id.org/dpv/pd#",
    "loc": "https://w3id.org/dpv/loc#",
    "legal-gb": "https://w3id.org/dpv/legal/gb#",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
# What the notice asks for ("my name and e-mail address"): DPV's personal data extension.
PERSONAL_DATA = [{"@id": "pd:Name"}, {"@id": "pd:EmailAddress"}]
# What the record adds to the receipt's row: the notice shown, the purpose's period, the
# recipient of a transfer consent, and the subject's retention rule.
DETAILS = text("""
SELECT n.text AS notice_text, p.consent_valid_months, r.name AS recipient_name,
       r.country AS recipient_country, cat.retention_rule, cat.retention_months
FROM consent_events e JOIN purposes p ON p.key = e.purpose
LEFT JOIN consent_notices n ON n.sha256 = e.notice_sha256
LEFT JOIN recipients r ON r.key = e.recipient
LEFT JOIN subjects s ON s.id = e.subject_id
LEFT JOIN categories cat ON cat.key = s.category
WHERE e.id = :id
""")


def _iri(value: str) -> dict[str, str]:
    return {"@id": value}


def _time(at: datetime) -> dict[str, str]:
    return {"@value": at.isoformat(), "@type": "xsd:dateTime"}


def _duration(months: int | None) -> dict[str, Any]:
    """How long a given consent lasts (guide §8.5.4): the purpose's period, else until
    the person withdraws it."""
    if months is None:
        return {"@type": "dpv:UntilEventDuration", "rdf:value": "Withdrawal of consent"}
    return {"@type": "dpv:TemporalDuration", "rdf:value": f"P{months}M"}


def _controller(base: str, controller: ControllerPublic) -> dict[str, Any]:
    """The entity fields (guide §8.4): name, identifier, role, contact, postal address."""
    iri = f"{base}/v1/controller"
    return {
        "@id": iri,
        "@type": ["dpv:Organisation", "dpv:DataController"],
        "dpv:hasName": controller.name,
        "dpv:hasIdentifier": iri,
        "dpv:hasContact": f"mailto:{controller.email}",
        "dpv:hasAddress": controller.address,
    }


def _recipients(row: Any, details: Any) -> list[dict[str, Any]]:
    """A transfer consent's recipient (named, in its country); otherwise the third parties
    the catalogue lists for the purpose."""
    if row.recipient is not None:
        return [
            {
                "@id": f"urn:consent-api:recipient:{row.recipient}",
                "@type": "dpv:ThirdParty",
                "dpv:hasName": details.recipient_name or row.recipient,
                "dpv:hasCountry": _iri(f"loc:{details.recipient_country}")
                if details.recipient_country
                else None,
            }
        ]
    return [{"@type": "dpv:ThirdParty", "dpv:hasName": name} for name in row.third_parties]


def _storage(details: Any) -> dict[str, Any]:
    rule = details.retention_rule or "the controller's retention rules"
    months = f", {details.retention_months} months" if details.retention_months else ""
    return {"@type": "dpv:StorageDuration", "dct:description": f"Retention rule: {rule}{months}"}


def _process(row: Any, details: Any, controller_iri: str, email: str) -> dict[str, Any]:
    """The processing the consent is for (guide §8.3)."""
    return {
        "@type": "dpv:Process",
        "dpv:hasPurpose": {
            "@id": f"urn:consent-api:purpose:{row.purpose}",
            "@type": "dpv:Purpose",
            "dct:identifier": row.purpose,
            "dct:description": row.description,
        },
        "dpv:hasPersonalData": PERSONAL_DATA,
        "dpv:hasStorageCondition": _storage(details),
        "dpv:hasDataController": _iri(controller_iri),
        "dpv:hasLegalBasis": _iri("dpv:ExpressedConsent"),
        "dpv:hasRecipient": _recipients(row, details),
        "dpv:hasJurisdiction": _iri("loc:GB"),
        "dpv:hasConsentControl": {
            "@type": "dpv:WithdrawConsent",
            "dpv:isExercisedAt": _iri(f"mailto:{email}"),
        },
        "dpv:hasRight": {
            "@type": "dpv:DataSubjectRight",
            "dct:title": "Right to withdraw consent (UK GDPR Art 7(3))",
            "dpv:isExercisedAt": _iri(f"mailto:{email}"),
        },
    }


def _notices(row: Any, details: Any) -> list[dict[str, Any]]:
    """The wording shown (guide §8.2: dpv:ConsentNotice, its language) and the privacy
    policy version it was shown under."""
    notices: list[dict[str, Any]] = []
    if row.notice_sha256:
        notices.append(
            {
                "@id": f"urn:sha256:{row.notice_sha256}",
                "@type": "dpv:ConsentNotice",
                "dct:identifier": row.notice_sha256,
                "dct:description": details.notice_text,
                "dct:language": "en",
            }
        )
    if row.policy_version:
        notices.append(
            {
                "@type": "dpv:PrivacyNotice",
                "dct:identifier": row.policy_version,
                "dct:source": _iri(row.policy_url) if row.policy_url else None,
                "dct:language": "en",
            }
        )
    return notices


def _status(row: Any, details: Any) -> dict[str, Any]:
    """The event (guide §8.5): its state and type, when, by whom, how, for how long."""
    given = row.action == "given"
    status: dict[str, Any] = {
        "@type": ["dpv:ConsentGiven", "dpv:ExpressedConsent"] if given else "dpv:ConsentWithdrawn",
        "dpv:isIndicatedAtTime": _time(row.occurred_at),
        "dpv:isIndicatedBy": _iri("dpv:DataSubject"),
        "dpv:hasIndicationMethod": row.method,
    }
    if given:
        status["dpv:hasDuration"] = _duration(details.consent_valid_months)
    return status


def _receipt(row: Any, signer: Signer, base: str, record_iri: str) -> dict[str, Any]:
    """The signed receipt (a compact JWS, verifiable with GET /v1/keys), as the guide's
    receipt node pointing at this record."""
    return {
        "@id": f"{base}/v1/consent-events/{row.id}/receipt",
        "@type": "dpv:ConsentReceipt",
        "dpv:hasIdentifier": str(row.id),
        "dct:created": _time(utcnow()),
        "dct:format": "application/jose",
        "rdf:value": signer.sign(reading.receipt_of(row)),
        "dpv:hasRecordOfActivity": _iri(record_iri),
    }


def build_record(row: Any, details: Any, signer: Signer, base: str) -> dict[str, Any]:
    """The JSON-LD document of one event (`row`: reading.EVENTS_WITH_CONTEXT's columns)."""
    controller = controller_identity.parse(row.controller)
    record_iri = f"{base}/v1/consent-events/{row.id}/record"
    entity = _controller(base, controller)
    document = {
        "@context": CONTEXT,
        "@id": record_iri,
        "@type": "dpv:ConsentRecord",
        "dct:identifier": str(row.id),
        "dct:conformsTo": _iri(SCHEMA),
        "dct:created": _time(row.recorded_at),
        # Pseudonymous: the subject's id, as on the receipt; never the e-mail or the name.
        "dpv:hasDataSubject": {"@id": f"urn:uuid:{row.subject_id}", "@type": "dpv:DataSubject"},
        "dpv:hasDataController": _iri(entity["@id"]),
        "dpv:hasJurisdiction": _iri("loc:GB"),
        "dpv:hasApplicableLaw": _iri("legal-gb:law-GDPR"),
        "dpv:hasNotice": _notices(row, details),
        "dpv:hasProcess": _process(row, details, entity["@id"], controller.email),
        "dpv:hasConsentStatus": _status(row, details),
        "dpv:hasEntity": entity,
        "@reverse": {"dpv:hasRecordOfActivity": _receipt(row, signer, base, record_iri)},
    }
    return _without_nulls(document)


def _without_nulls(value: Any) -> Any:
    """JSON-LD drops a null value anyway; leaving it out keeps the document plain."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


async def consent_record(
    session: AsyncSession, signer: Signer, *, event_id: uuid.UUID
) -> dict[str, Any]:
    """The ISO/IEC TS 27560 record of one consent event, with its signed receipt."""
    row = (await session.execute(reading.BY_EVENT, {"id": event_id})).first()
    if row is None:
        raise NotFound("No consent event with this id.")
    details = (await session.execute(DETAILS, {"id": event_id})).one()
    base = current_settings().public_base_url.rstrip("/")
    return build_record(row, details, signer, base)
