"""Consent receipts: the fields of the Kantara Consent Receipt v1.1, with the ISO/IEC TS 27560
names beside them where they differ. Derived from the ledger on demand, so a receipt can
always be re-issued and never disagrees with the event."""

from datetime import datetime
from typing import Any

from app.models.controller import ControllerPublic

PII_CATEGORIES = [
    "name",
    "business e-mail",
    "telephone",
    "mobile",
    "job title",
    "company",
    "business address",
]


def _kantara(controller: ControllerPublic) -> dict[str, Any]:
    """The controller's catalogue row under Kantara's names."""
    return {
        "piiController": controller.name,
        "contact": controller.email,
        "address": controller.address,
        "email": controller.email,
        "phone": controller.phone,
    }


def _purpose(
    event: Any,
    purpose_description: str,
    direct_marketing: bool,
    third_parties: list[str],
    controller: ControllerPublic,
) -> dict[str, Any]:
    termination = (
        "Until withdrawn. Withdraw at any time, as easily as it was given, by asking "
        f"{controller.email}."
    )
    return {
        "purpose": purpose_description,
        "purposeCategory": ["direct marketing" if direct_marketing else event.purpose],
        "consentType": "EXPLICIT",
        "piiCategory": PII_CATEGORIES,
        "primaryPurpose": True,
        "termination": termination,
        "thirdPartyDisclosure": bool(third_parties),
        "thirdPartyName": ", ".join(third_parties) if third_parties else None,
    }


def _iso27560(event: Any, occurred: datetime, controller: ControllerPublic) -> dict[str, Any]:
    """ISO/IEC TS 27560 consent record names where they differ from Kantara's."""
    return {
        "record_id": str(event.id),
        "pii_principal_id": str(event.subject_id),
        "timestamp": occurred.isoformat(),
        "state": event.action,
        "collection_method": event.method,
        "policy_version": event.policy_version,
        "notice": {"sha256": event.notice_sha256},
        "recipient": event.recipient,
        "supervisory_authority": controller.supervisory_authority,
    }


def build_receipt(
    event: Any,
    *,
    purpose_description: str,
    direct_marketing: bool,
    policy_url: str | None,
    third_parties: list[str],
    controller: ControllerPublic,
) -> dict[str, Any]:
    """The receipt of one event; `controller` is the catalogue row as it is now (a receipt
    issued again after the controller changed names the new one)."""
    occurred: datetime = event.occurred_at
    purpose = _purpose(event, purpose_description, direct_marketing, third_parties, controller)
    return {
        "version": "KI-CR-v1.1.0",
        "jurisdiction": "GB",
        "consentTimestamp": int(occurred.timestamp()),
        "collectionMethod": event.method,
        "consentReceiptID": str(event.id),
        "language": "en",
        "piiPrincipalId": str(event.subject_id),
        "piiControllers": [_kantara(controller)],
        "policyUrl": policy_url,
        "services": [{"service": event.purpose, "purposes": [purpose]}],
        "sensitive": False,
        "spiCat": [],
        "iso27560": _iso27560(event, occurred, controller),
    }
