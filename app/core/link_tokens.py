"""Signed link tokens: the credential of the person's unsubscribe and preference pages.

A token is `base64url(payload) "." base64url(HMAC-SHA256(key, domain || payload))`. The
payload holds no personal data in clear: the subject's id (a random UUID), the keyed hash of
the e-mail the link was made for, an optional purpose key, the kind of link, the expiry, the
id of the key that signed it and the id of the API key that asked for the link (so every
action taken through it records who minted it). Changing any byte (another subject, another
purpose, a later expiry, the other kind of link) breaks the MAC, so a token cannot be
widened.

Keys rotate: CONSENT_LINK_KEYS is a list; the first signs, every one verifies. Drop an old
key once the longest-lived link it signed has expired. Unset, the key is derived from
CONSENT_SECRET_KEY for this use alone (app.core.keys). The derivation of earlier releases
(kid `s0`) still verifies unsubscribe links it signed until the last of them expires, and
nothing else: a preference link or a form value signed with it is refused.
"""

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from app.core.config import Settings
from app.core.keys import (
    LEGACY_LINK_KID,
    KeyUse,
    derive,
    legacy_link_key,
    legacy_links_valid_until,
)

# u: one-click unsubscribe; p: preference page; c: confirm a double opt-in; r: confirm a
# rights request started from the preference page (c and r carry the id they confirm).
Kind = Literal["u", "p", "c", "r"]
_DOMAIN = b"consent-api/link/v1\n"
_CSRF_DOMAIN = b"consent-api/form/v1\n"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MIN_SECRET_CHARS = 32
MAX_TOKEN_CHARS = 1024
DERIVED_KID = "d1"  # the key derived with HKDF from CONSENT_SECRET_KEY
FORM_TOKEN_SECONDS = 2 * 3600


class InvalidToken(Exception):
    """Not ours, tampered with, or malformed."""


class ExpiredToken(Exception):
    """Ours and intact, but past its expiry."""


@dataclass(frozen=True)
class LinkClaims:
    kind: Kind
    subject_id: uuid.UUID
    email_hash: str
    purpose: str | None
    expires_at: int  # Unix seconds
    kid: str
    minted_by: uuid.UUID | None  # the API key that asked for the link (None: before this)
    # The e-mail hash key that made `email_hash` (links from before keys rotated: key 0).
    email_hash_key: int = 0
    ref: uuid.UUID | None = None  # what a confirmation link confirms (kinds c and r)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def link_keys(settings: Settings) -> list[tuple[str, bytes]]:
    """(kid, secret) pairs, the signing key first."""
    if settings.link_keys is None:
        return [(DERIVED_KID, derive(settings, KeyUse.LINKS))]
    keys: list[tuple[str, bytes]] = []
    for item in settings.link_keys.get_secret_value().split(","):
        kid, sep, secret = item.strip().partition(":")
        if not sep or not _KID.match(kid) or len(secret) < MIN_SECRET_CHARS:
            raise ValueError(
                "CONSENT_LINK_KEYS must be `kid:secret,...` with ids of 1-16 letters, digits,"
                f" `_` or `-`, and secrets of at least {MIN_SECRET_CHARS} characters"
            )
        keys.append((kid, secret.encode()))
    return keys


def _mac(secret: bytes, domain: bytes, body: str) -> str:
    return _b64(hmac.new(secret, domain + body.encode(), hashlib.sha256).digest())


def sign_link(
    settings: Settings,
    *,
    kind: Kind,
    subject_id: uuid.UUID,
    email_hash: str,
    purpose: str | None,
    expires_at: int,
    minted_by: uuid.UUID | None = None,
    email_hash_key: int = 0,
    ref: uuid.UUID | None = None,
) -> str:
    kid, secret = link_keys(settings)[0]
    payload = {
        "k": kid,
        "t": kind,
        "s": subject_id.hex,
        "h": email_hash,
        "p": purpose,
        "e": expires_at,
        "m": minted_by.hex if minted_by else None,
        "hk": email_hash_key,
    }
    if ref is not None:  # only confirmation links: other tokens stay as they were
        payload["r"] = ref.hex
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_mac(secret, _DOMAIN, body)}"


def verify_link(
    settings: Settings, token: str, *, kind: Kind, now: float | None = None
) -> LinkClaims:
    """The claims of a genuine, unexpired token of this kind; raises otherwise."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise InvalidToken
    body, mac = token.split(".")
    try:
        payload = json.loads(_unb64(body))
        kid = str(payload["k"])
    except (ValueError, KeyError, TypeError):
        raise InvalidToken from None
    secret = _verifying_key(settings, kid, kind)
    if secret is None or not hmac.compare_digest(mac, _mac(secret, _DOMAIN, body)):
        raise InvalidToken
    try:
        minter = payload.get("m")
        claims = LinkClaims(
            kind=payload["t"],
            subject_id=uuid.UUID(hex=payload["s"]),
            email_hash=str(payload["h"]),
            purpose=payload["p"],
            expires_at=int(payload["e"]),
            kid=kid,
            minted_by=uuid.UUID(hex=minter) if minter else None,
            email_hash_key=int(payload.get("hk", 0)),
            ref=uuid.UUID(hex=payload["r"]) if payload.get("r") else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidToken from None
    if claims.kind != kind:  # an unsubscribe link never opens the preference page
        raise InvalidToken
    retired_until = legacy_links_valid_until(settings).timestamp()
    if kid == LEGACY_LINK_KID and claims.expires_at > retired_until:
        raise InvalidToken  # outlives every link that key ever signed: forged
    if claims.expires_at <= (time.time() if now is None else now):
        raise ExpiredToken
    return claims


def _verifying_key(settings: Settings, kid: str, kind: Kind) -> bytes | None:
    """The key that verifies `kid`; the retired derivation only for unsubscribe links, only
    while links it signed may still be alive, and only where no explicit keys replace it."""
    secret = dict(link_keys(settings)).get(kid)
    if secret is not None:
        return secret
    if (
        kid == LEGACY_LINK_KID
        and kind == "u"
        and settings.link_keys is None
        and time.time() < legacy_links_valid_until(settings).timestamp()
    ):
        return legacy_link_key(settings)
    return None


def form_token(settings: Settings, link_token: str, *, now: float | None = None) -> str:
    """A per-page anti-forgery value bound to the link token (signed, no cookie needed)."""
    issued = str(int(time.time() if now is None else now))
    secret = derive(settings, KeyUse.LINK_FORMS)
    return f"{issued}.{_mac(secret, _CSRF_DOMAIN, issued + '|' + link_token)}"


def check_form_token(
    settings: Settings, link_token: str, value: str, *, now: float | None = None
) -> bool:
    issued, sep, mac = value.partition(".")
    if not sep or not issued.isdigit():
        return False
    age = (time.time() if now is None else now) - int(issued)
    if not 0 <= age <= FORM_TOKEN_SECONDS:
        return False
    secret = derive(settings, KeyUse.LINK_FORMS)
    return hmac.compare_digest(mac, _mac(secret, _CSRF_DOMAIN, issued + "|" + link_token))


def token_fingerprint(token: str) -> str:
    """A short stable handle for a token (rate limiting), never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]
