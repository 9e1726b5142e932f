"""Every key the service uses, derived from the one root secret (`CONSENT_SECRET_KEY`).

Each use has its own key, derived with HKDF-SHA-256 (RFC 5869) and a fixed label, so that
learning one (say, a value fingerprint an attacker chose the input of) reveals nothing of
another. HKDF's extract step uses the root secret as the *message* of an HMAC keyed with a
fixed salt, and its expand step an HMAC keyed with that output: no derived key is ever an
HMAC keyed with the root secret over any input, so no caller-chosen value hashed anywhere
can yield one.

The one exception is the e-mail hash key (app.core.crypto), which stays the root secret
itself: every stored opt-out and e-mail hash was made with it, and an opt-out of an erased
person (a hash only) cannot be re-made with another key. Its input is always a validated
e-mail address, never a label: no derived key here is, or was, an HMAC of an address.

Earlier releases derived the link key and the auditor pages' key as `HMAC(secret, label)`.
Rectification stored `HMAC(secret, value)` of a value the caller chose, which gave those
keys away. `LEGACY_LINK_KEY` keeps the old link derivation for verifying unsubscribe links
issued before this change (people keep them in their mailboxes), and only until the last of
them has expired (`LEGACY_LINKS_VALID_UNTIL`); nothing is signed with it any more.
"""

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.core.config import Settings

_SALT = b"consent-api key derivation v1"


class KeyUse(StrEnum):
    """One label per use; never reuse one for another purpose, never change one in place."""

    LINKS = "signed-links"  # the person's /u/ and /p/ links (when CONSENT_LINK_KEYS is unset)
    LINK_FORMS = "link-page-forms"  # anti-forgery values of the person's page forms
    AUDITOR_PAGES = "auditor-page-sessions"  # auditor page links, sessions and their CSRF
    VALUE_FINGERPRINTS = "value-fingerprints"  # keyed hashes of rectified values
    MAILCHIMP_EVENTS = "mailchimp-event-keys"  # de-duplication keys of MailChimp's events
    KEY_FINGERPRINTS = "key-fingerprints"  # what the database stores to recognise the keys
    CONFIRMATION_IPS = "confirmation-ip-hashes"  # a double opt-in confirmer's address, hashed
    WEBHOOK_SECRETS = "webhook-signing-secrets"  # encrypts webhook endpoints' secrets at rest


def derive(settings: Settings, use: KeyUse) -> bytes:
    """The 32-byte key for `use`, from the root secret."""
    return _derive(settings.secret_key.get_secret_value(), use)


@lru_cache(maxsize=64)
def _derive(secret: str, use: KeyUse) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=use.value.encode()).derive(
        secret.encode()
    )


def keyed_hash(settings: Settings, use: KeyUse, value: str) -> str:
    """HMAC-SHA-256 of a value under the key of `use`, as hex."""
    return hmac.new(derive(settings, use), value.encode(), hashlib.sha256).hexdigest()


# --- The derivation before HKDF: verify-only, unsubscribe links only ---------------------
LEGACY_LINK_KID = "s0"
LEGACY_LINKS_RETIRED_AT = datetime(2026, 12, 5, tzinfo=UTC)  # when this change went out


def legacy_links_valid_until(settings: Settings) -> datetime:
    """No unsubscribe link signed with the retired key lives past this: it was signed before
    the change, for at most CONSENT_UNSUBSCRIBE_LINK_DAYS (90 by default)."""
    return LEGACY_LINKS_RETIRED_AT + timedelta(days=settings.unsubscribe_link_days)


def legacy_link_key(settings: Settings) -> bytes:
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, b"link-key", hashlib.sha256).digest()
