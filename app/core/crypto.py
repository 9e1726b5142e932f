"""Keyed hashes of e-mail addresses: stable, not reversible without the server secret."""

import hashlib
import hmac

from app.core.config import Settings, current_settings


def email_hash(email: str) -> str:
    """HMAC-SHA256 of the normalised e-mail under CONSENT_SECRET_KEY."""
    return keyed_email_hash(current_settings(), email)


def keyed_email_hash(settings: Settings, email: str) -> str:
    """The e-mail hash under these settings' key. The key is the root secret itself, as it
    always was (every stored hash was made with it; app.core.keys says why that is safe)."""
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, email.strip().lower().encode(), hashlib.sha256).hexdigest()
