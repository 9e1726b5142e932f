"""Keyed hashes of e-mail addresses: stable, not reversible without the hash key.

The keys are `CONSENT_EMAIL_HASH_KEYS` ("id:secret,..."), newest first: the newest hashes
every address written from now on; the older ones only match what they made (an erased
person's opt-out is a hash only and can never be re-hashed: its key stays, verify-only).
Every stored hash has its key's id beside it (`email_hash_key`). Unset, there is one key,
id 0: the root secret `CONSENT_SECRET_KEY` itself, as it always was (app.core.keys says
why that is safe)."""

import hashlib
import hmac
from dataclasses import dataclass

from app.core.config import Settings, current_settings

DERIVED_KEY_ID = 0


@dataclass(frozen=True)
class HashKey:
    id: int
    secret: bytes = b""

    def hash(self, email: str) -> str:
        return hmac.new(self.secret, normalise(email).encode(), hashlib.sha256).hexdigest()


def normalise(email: str) -> str:
    return email.strip().lower()


def hash_keys(settings: Settings) -> list[HashKey]:
    """The e-mail hash keys, newest first."""
    if settings.email_hash_keys is None:
        return [HashKey(DERIVED_KEY_ID, settings.secret_key.get_secret_value().encode())]
    keys = []
    for item in settings.email_hash_keys.get_secret_value().split(","):
        kid, _, secret = item.strip().partition(":")
        keys.append(HashKey(int(kid), secret.encode()))
    return keys


def newest_key(settings: Settings | None = None) -> HashKey:
    return hash_keys(settings or current_settings())[0]


def email_hash(email: str) -> str:
    """The hash to store for this address: HMAC-SHA256 under the newest key."""
    return newest_key().hash(email)


def email_hashes(email: str) -> list[str]:
    """The address's hash under every key, newest first: what a look-up matches."""
    return [key.hash(email) for key in hash_keys(current_settings())]


def keyed_email_hash(settings: Settings, email: str) -> str:
    """The e-mail hash under these settings' newest key."""
    return newest_key(settings).hash(email)
