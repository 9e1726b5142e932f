"""Credentials for the auditor's pages, which a browser opens from the address bar and so
cannot send a bearer header: a short-lived signed link (`consent-api report-link`) or a
login form that takes an API key; either becomes an HttpOnly, SameSite=Strict cookie.

Tokens are HMAC-SHA-256 over a JSON payload, under the key derived for this use only
(`app.core.keys.derive(settings, KeyUse.AUDITOR_PAGES)`), carrying their kind, so that a
link cannot be replayed as a session cookie nor the reverse. A valid signature is not
enough: every session also has a server-side record (app.services.access.page_sessions, holding a
hash of the token), and a cookie is honoured only while that record is live. Logout and
`consent-api page-sessions revoke` end it; a session opened with an API key ends at once
when that key is revoked; revoking a session opened from a link refuses the link too.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from app.core.config import Settings
from app.core.keys import KeyUse, derive

SESSION_COOKIE = "consent_report_session"
CSRF_COOKIE = "consent_report_csrf"
PAGE_ROLES = ("auditor", "admin")
# The privacy team's console (app.web.console): crm and admin work there, an auditor reads.
# Its tokens carry kinds of their own, so an auditor-page token never opens the console
# nor the reverse.
CONSOLE_SESSION_COOKIE = "consent_console_session"
CONSOLE_CSRF_COOKIE = "consent_console_csrf"
CONSOLE_ROLES = ("crm", "admin", "auditor")
ROLES_BY_KIND = {
    "link": PAGE_ROLES,
    "session": PAGE_ROLES,
    "console_link": CONSOLE_ROLES,
    "console_session": CONSOLE_ROLES,
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(settings: Settings) -> bytes:
    """HKDF of the root secret (app.core.keys). The earlier `HMAC(secret, label)` key is
    retired: tokens signed with it no longer verify, and their holders sign in again."""
    return derive(settings, KeyUse.AUDITOR_PAGES)


def sign(settings: Settings, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(_key(settings), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(settings: Settings, token: str, kind: str) -> dict[str, Any] | None:
    """The payload if the token is ours, of `kind`, and not expired; else None."""
    body, _, mac = token.partition(".")
    if not body or not mac or len(token) > 2000:
        return None
    expected = hmac.new(_key(settings), body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        payload: dict[str, Any] = json.loads(_unb64(body))
    except ValueError:
        return None
    if payload.get("kind") != kind or payload.get("role") not in ROLES_BY_KIND.get(kind, ()):
        return None
    if not isinstance(payload.get("exp"), int) or payload["exp"] <= time.time():
        return None
    return payload


def issue_link_token(settings: Settings, *, role: str, minutes: int) -> str:
    if role not in PAGE_ROLES:
        raise ValueError(f"report links are for {', '.join(PAGE_ROLES)}")
    payload = {
        "kind": "link",
        "role": role,
        "name": f"report-link:{role}",
        "exp": int(time.time()) + minutes * 60,
        "nonce": secrets.token_urlsafe(8),
    }
    return sign(settings, payload)


@dataclass(frozen=True)
class PageSession:
    role: str
    name: str
    key_id: uuid.UUID | None
    expires: int
    token: str

    def csrf_token(self, settings: Settings) -> str:
        """Bound to this session: a form posted from elsewhere cannot know it."""
        mac = hmac.new(_key(settings), b"csrf:" + self.token.encode(), hashlib.sha256)
        return _b64(mac.digest())


def issue_console_link(
    settings: Settings, *, role: str, name: str, key_id: uuid.UUID, minutes: int
) -> str:
    """A console link names the API key it stands for: the sessions it opens are that
    key's, so revoking the key ends them and refuses the link (app.web.console.auth)."""
    if role not in CONSOLE_ROLES:
        raise ValueError(f"console links are for {', '.join(CONSOLE_ROLES)} keys")
    payload = {
        "kind": "console_link",
        "role": role,
        "name": name,
        "key_id": str(key_id),
        "exp": int(time.time()) + minutes * 60,
        "nonce": secrets.token_urlsafe(8),
    }
    return sign(settings, payload)


def issue_session(
    settings: Settings,
    *,
    role: str,
    name: str,
    key_id: uuid.UUID | None,
    kind: str = "session",
) -> PageSession:
    expires = int(time.time()) + settings.report_session_minutes * 60
    payload = {
        "kind": kind,
        "role": role,
        "name": name,
        "key_id": str(key_id) if key_id else None,
        "exp": expires,
        "nonce": secrets.token_urlsafe(8),
    }
    return PageSession(role, name, key_id, expires, sign(settings, payload))


def read_session(
    settings: Settings, token: str | None, kind: str = "session"
) -> PageSession | None:
    payload = verify(settings, token or "", kind)
    if payload is None:
        return None
    try:
        key_id = uuid.UUID(payload["key_id"]) if payload.get("key_id") else None
    except ValueError:
        return None
    return PageSession(payload["role"], str(payload["name"]), key_id, payload["exp"], token or "")


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
