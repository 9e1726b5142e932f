"""Signing secrets in the Standard Webhooks format (`whsec_` + base64 of 32 random bytes),
stored encrypted with AES-256-GCM under a key derived from CONSENT_SECRET_KEY, so that a
copy of the database alone signs nothing. Changing CONSENT_SECRET_KEY makes the stored
secrets unreadable: each endpoint then needs `rotate-secret` (or a new PUT)."""

import base64
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.core.config import Settings
from app.core.keys import KeyUse, derive

PREFIX = "whsec_"
_NONCE = 12
_AAD = b"webhook-secret v1"


class UnreadableSecret(Exception):
    """The stored secret was encrypted under another CONSENT_SECRET_KEY."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def encrypt(settings: Settings, secret: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(derive(settings, KeyUse.WEBHOOK_SECRETS)).encrypt(
        nonce, secret.encode(), _AAD
    )


def decrypt(settings: Settings, stored: bytes) -> str:
    from cryptography.exceptions import InvalidTag

    try:
        plain = AESGCM(derive(settings, KeyUse.WEBHOOK_SECRETS)).decrypt(
            stored[:_NONCE], stored[_NONCE:], _AAD
        )
    except InvalidTag:
        raise UnreadableSecret("the secret was stored under another CONSENT_SECRET_KEY") from None
    return plain.decode()
