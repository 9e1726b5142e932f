"""API keys (Bearer), roles and scopes.

Keys are 256-bit random tokens, so a plain SHA-256 is a safe stored form (no need for a
slow password hash). Lookups are cached for `auth_cache_seconds` so that a hot path costs
no extra round trip; a revoked key stops working within that time.
"""

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fastapi import Request

from app.core.driver import Database, prepare
from app.core.errors import Forbidden, TooManyRequests, Unauthorized
from app.core.guard import AUTH_THROTTLED, TOO_MANY_DETAIL, client_address

Role = Literal["crm", "website", "sync", "auditor", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
KEY_PREFIX = "cak_"

READ_SCOPES = frozenset(
    {
        "catalogue:read",
        "subjects:read",
        "bases:read",
        "consent:read",
        "optouts:read",
        "decisions:read",
        "rights:read",
        "audiences:read",
        "changes:read",
        "audit:read",
        "reports:read",
        "metrics:read",
        "sync:read",
        "webhooks:read",  # webhook endpoints (without secrets) and their deliveries
    }
)

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "crm": frozenset(
        {
            "catalogue:read",
            "subjects:read",
            "subjects:write",
            "bases:read",
            "bases:write",
            "consent:read",
            "consent:write",
            "optouts:read",
            "optouts:write",
            "decisions:ask",
            "decisions:read",
            "audiences:read",  # issue 10: the CRM reads audiences too
            "rights:read",
            "rights:create",
            "rights:write",
            "links:create",
            "links:preference",  # app.services.person.pages: preference pages act as the person
        }
    ),
    # The website never lists subjects: it writes and checks only.
    "website": frozenset(
        {
            "catalogue:read",
            "consent:write",
            "optouts:write",
            "optouts:read",
            "rights:create",
            "decisions:ask",
        }
    ),
    "sync": frozenset(
        {
            "catalogue:read",
            "audiences:read",
            "changes:read",
            "optouts:write",
            "optouts:read",
            "decisions:ask",
            "links:create",  # unsubscribe links only (no links:preference)
            "sync:read",  # the calls refused (GET /v1/sync/failures)
        }
    ),
    "auditor": READ_SCOPES,
    "admin": READ_SCOPES | {"catalogue:write", "retention:run", "webhooks:write"},
}


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID | None  # None: the service's own workers (sync), not an API key
    name: str
    role: str
    scopes: frozenset[str]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_cache: dict[str, tuple[float, Principal]] = {}
KEY_LOOKUP = prepare(
    "SELECT id, name, role FROM api_keys WHERE key_hash = :key_hash AND revoked_at IS NULL"
)


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send `Authorization: Bearer <api key>`.")
    return token.strip()


PRINCIPAL_KEY = "consent_api.principal"  # where a request keeps its principal (ASGI scope)


async def authenticate(request: Request) -> Principal:
    """The router default for every API route (app.main): who is calling, looked up once
    per request (the router-wide dependency and `require` share it)."""
    known: Principal | None = request.scope.get(PRINCIPAL_KEY)
    if known is not None:
        return known
    principal = await _lookup(request)
    request.scope[PRINCIPAL_KEY] = principal
    return principal


async def _lookup(request: Request) -> Principal:
    key_hash = hash_key(_bearer_token(request))
    ttl: float = request.app.state.settings.auth_cache_seconds
    now = time.monotonic()
    hit = _cache.get(key_hash)
    if hit and hit[0] > now:
        return hit[1]
    database: Database = request.app.state.database
    async with database.autocommit() as con:
        row = await KEY_LOOKUP.fetchrow(con, key_hash=key_hash)
    if row is None:
        _cache.pop(key_hash, None)
        limiter = request.app.state.auth_limiter
        client = client_address(request.scope)
        # Failures are counted per address, but only a request that fails is refused: a
        # valid key from the same address (a CRM behind the website's egress) is served.
        wait = limiter.retry_after(client)
        limiter.failed(client, "unknown_or_revoked")
        if wait:
            AUTH_THROTTLED.inc()
            raise TooManyRequests(TOO_MANY_DETAIL, headers={"Retry-After": str(wait)})
        raise Unauthorized("The API key is unknown or revoked.")
    principal = Principal(row.id, row.name, row.role, ROLE_SCOPES[row.role])
    if ttl > 0:
        _cache[key_hash] = (now + ttl, principal)
    return principal


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that checks one scope of the caller. Authentication is the router default
    (app.main); this calls `authenticate` itself rather than depending on it (one dependency
    level less to solve per request), and the principal kept in the request's scope makes it
    one key lookup per request whichever runs first."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        check_scope(principal, scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    dependency.required_scope = scope  # type: ignore[attr-defined]  # app.core.auth_first
    return dependency


def check_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(f"Role `{principal.role}` lacks the scope `{scope}`.")
