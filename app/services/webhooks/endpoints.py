"""Webhook endpoints: register (PUT), list, delete, rotate the secret, and what the worker
needs to sign (the secrets, decrypted only here). Runs inside the caller's transaction."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import NotFound, Unprocessable
from app.core.pagination import Page, decode_cursor, encode_cursor
from app.models.base import utcnow
from app.models.webhook import (
    CHANGE_KINDS,
    WebhookEndpointPublic,
    WebhookEndpointPut,
    WebhookEndpointWithSecret,
)
from app.services.webhooks import addresses, secrets

log = logging.getLogger("consent_api.webhooks")
# Standard Webhooks lets a sender put several signatures in one header: after a rotation
# the previous secret keeps signing this long, so a receiver can switch without a gap.
ROTATION_OVERLAP = timedelta(hours=24)
COLUMNS = (
    "key, url, kinds, description, disabled_at, disabled_reason, previous_secret_until,"
    " created_at, updated_at"
)
# A PUT creates the endpoint with a new secret, or changes url, kinds and description of an
# existing one (its secret unchanged) and enables it again after a 410.
UPSERT = text(f"""
INSERT INTO webhook_endpoints (key, url, kinds, description, secret_enc, created_at, updated_at)
VALUES (:key, :url, :kinds, :description, :secret_enc, :now, :now)
ON CONFLICT (key) DO UPDATE SET url = EXCLUDED.url, kinds = EXCLUDED.kinds,
  description = EXCLUDED.description, disabled_at = NULL, disabled_reason = NULL,
  updated_at = EXCLUDED.updated_at
RETURNING {COLUMNS}, (xmax = 0) AS created
""")  # noqa: S608 - constant SQL
ROTATE = text(f"""
UPDATE webhook_endpoints SET previous_secret_enc = secret_enc, secret_enc = :secret_enc,
  previous_secret_until = :until, updated_at = :now
WHERE key = :key RETURNING {COLUMNS}
""")  # noqa: S608 - constant SQL
DISABLE = text(
    "UPDATE webhook_endpoints SET disabled_at = :now, disabled_reason = :reason, updated_at = :now"
    " WHERE key = ANY(CAST(:keys AS text[])) AND disabled_at IS NULL"
)
DELETE = text("DELETE FROM webhook_endpoints WHERE key = :key")
LIST = text(
    f"SELECT {COLUMNS} FROM webhook_endpoints WHERE key > :after ORDER BY key LIMIT :n"  # noqa: S608
)
SIGNING = text(
    "SELECT key, url, secret_enc, previous_secret_enc, previous_secret_until"
    " FROM webhook_endpoints WHERE disabled_at IS NULL"
    " AND (CAST(:key AS text) IS NULL OR key = :key)"
)


@dataclass(frozen=True)
class Signing:
    """What a call to one endpoint needs: its URL and every secret that signs now."""

    key: str
    url: str
    secrets: tuple[str, ...]


def _check(settings: Settings, body: WebhookEndpointPut) -> list[str]:
    unknown = sorted(set(body.kinds) - set(CHANGE_KINDS))
    if unknown:
        raise Unprocessable(
            f"Unknown change-feed kinds: {', '.join(unknown)}.", known=list(CHANGE_KINDS)
        )
    try:
        addresses.check_url(body.url, development=settings.env == "development")
    except addresses.AddressRefused as exc:
        raise Unprocessable(f"Refused URL: {exc}.") from None
    return sorted(set(body.kinds))


async def put(
    session: AsyncSession, settings: Settings, key: str, body: WebhookEndpointPut
) -> tuple[WebhookEndpointWithSecret, bool]:
    """Create or change an endpoint; (the endpoint with its secret if new, created?)."""
    kinds = _check(settings, body)
    secret = secrets.new_secret()
    row = (
        await session.execute(
            UPSERT,
            {
                "key": key,
                "url": body.url,
                "kinds": kinds,
                "description": body.description,
                "secret_enc": secrets.encrypt(settings, secret),
                "now": utcnow(),
            },
        )
    ).one()
    created = bool(row.created)
    public = _public(row)
    return WebhookEndpointWithSecret(**public.model_dump(), secret=secret if created else None), (
        created
    )


async def rotate(
    session: AsyncSession, settings: Settings, key: str, *, now: datetime | None = None
) -> WebhookEndpointWithSecret:
    """A new secret, shown once; the previous one also signs for ROTATION_OVERLAP."""
    now = now or utcnow()
    secret = secrets.new_secret()
    params = {
        "key": key,
        "secret_enc": secrets.encrypt(settings, secret),
        "until": now + ROTATION_OVERLAP,
        "now": now,
    }
    row = (await session.execute(ROTATE, params)).one_or_none()
    if row is None:
        raise NotFound(f"No webhook endpoint `{key}`.")
    return WebhookEndpointWithSecret(**_public(row).model_dump(), secret=secret)


async def delete(session: AsyncSession, key: str) -> None:
    """The endpoint and its deliveries (waiting ones are not sent)."""
    if not (await session.execute(DELETE, {"key": key})).rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"No webhook endpoint `{key}`.")


async def disable(session: AsyncSession, keys: Sequence[str], reason: str, now: datetime) -> None:
    """The receiver said 410 Gone: nothing more is sent until a PUT enables it again."""
    if keys:
        await session.execute(DISABLE, {"keys": list(keys), "reason": reason[:200], "now": now})


async def listing(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> Page[WebhookEndpointPublic]:
    after = str((decode_cursor(cursor, 1) or [""])[0])
    rows = (await session.execute(LIST, {"after": after, "n": limit + 1})).all()
    items = [_public(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items=items, next_cursor=encode_cursor([items[-1].key]) if more else None)


async def signing(
    session: AsyncSession, settings: Settings, *, now: datetime, key: str | None = None
) -> dict[str, Signing]:
    """The enabled endpoints (or the one named) with the secrets that sign at `now`."""
    found = {}
    for r in await session.execute(SIGNING, {"key": key}):
        try:
            keys = [secrets.decrypt(settings, r.secret_enc)]
            if r.previous_secret_enc and r.previous_secret_until and now < r.previous_secret_until:
                keys.append(secrets.decrypt(settings, r.previous_secret_enc))
        except secrets.UnreadableSecret:
            # CONSENT_SECRET_KEY changed: its deliveries wait until the secret is rotated.
            log.warning("webhook endpoint's secret unreadable", extra={"endpoint": r.key})
            continue
        found[r.key] = Signing(r.key, r.url, tuple(keys))
    return found


async def exists(session: AsyncSession, key: str) -> None:
    row = await session.execute(text("SELECT 1 FROM webhook_endpoints WHERE key = :k"), {"k": key})
    if row.first() is None:
        raise NotFound(f"No webhook endpoint `{key}`.")


def _public(row: Any) -> WebhookEndpointPublic:
    return WebhookEndpointPublic.model_validate(
        {k: v for k, v in row._mapping.items() if k != "created"}
    )
