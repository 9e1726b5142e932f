"""Sync with MailChimp and SurveyMonkey: the webhook's events, the worker's state and the
members each target holds. The HTTP side lives in app/integrations/."""

import uuid

from app.core.auth import ROLE_SCOPES, Principal


def system_principal(name: str) -> Principal:
    """The service's own worker (no API key), named in decisions and audit entries."""
    return Principal(key_id=None, name=name, role="sync", scopes=ROLE_SCOPES["sync"])


def subject_key(subject_id: uuid.UUID | None) -> str:
    return "" if subject_id is None else str(subject_id)
