"""Keyed hashes of e-mail addresses: stable, not reversible without the server secret."""

import hashlib
import hmac

from app.core.config import get_settings


def email_hash(email: str) -> str:
    """HMAC-SHA256 of the normalised e-mail under CONSENT_SECRET_KEY."""
    secret = get_settings().secret_key.get_secret_value().encode()
    return hmac.new(secret, email.strip().lower().encode(), hashlib.sha256).hexdigest()
