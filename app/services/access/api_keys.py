"""API key administration (used by the CLI; keys are never created over HTTP)."""

import uuid
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.auth import ROLES, generate_key, hash_key
from app.models.api_key import ApiKey
from app.services.audit import entries as audit


class KeyAdminError(Exception):
    pass


async def create_key(session: AsyncSession, *, name: str, role: str) -> str:
    """Store a new key's hash and return the key itself (shown once, never stored)."""
    if role not in ROLES:
        raise KeyAdminError(f"unknown role `{role}`")
    key = generate_key()
    try:
        async with session.begin_nested():
            key_id = (
                await session.execute(
                    insert(ApiKey)
                    .values(name=name, role=role, key_hash=hash_key(key))
                    .returning(col(ApiKey.id))
                )
            ).scalar_one()
    except IntegrityError as exc:
        raise KeyAdminError(f"a key named `{name}` already exists") from exc
    await audit.record(session, None, "api_key.create", "api_key", key_id, role=role)
    return key


async def revoke_key(session: AsyncSession, *, name: str) -> bool:
    key_id = (
        await session.execute(
            update(ApiKey)
            .where(col(ApiKey.name) == name, col(ApiKey.revoked_at).is_(None))
            .values(revoked_at=func.now())
            .returning(col(ApiKey.id))
        )
    ).scalar_one_or_none()
    if key_id is not None:
        await audit.record(session, None, "api_key.revoke", "api_key", key_id)
    return key_id is not None


async def list_keys(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(
            col(ApiKey.name), col(ApiKey.role), col(ApiKey.created_at), col(ApiKey.revoked_at)
        ).order_by(col(ApiKey.name))
    )
    return [dict(r._mapping) for r in rows]


async def find_live_key(session: AsyncSession, key: str) -> Any:
    """(id, name, role) of the unrevoked key, or None: the auditor pages' login form."""
    if not key:
        return None
    return (
        await session.execute(
            select(col(ApiKey.id), col(ApiKey.name), col(ApiKey.role)).where(
                col(ApiKey.key_hash) == hash_key(key), col(ApiKey.revoked_at).is_(None)
            )
        )
    ).first()


async def is_live(session: AsyncSession, key_id: Any) -> bool:
    """Whether the key behind a page session is still unrevoked."""
    found = await session.scalar(
        select(col(ApiKey.id)).where(col(ApiKey.id) == key_id, col(ApiKey.revoked_at).is_(None))
    )
    return found is not None


async def find_live_key_by_name(session: AsyncSession, name: str) -> Any:
    """(id, name, role) of the unrevoked key of this name, or None: `console-link`."""
    return (
        await session.execute(
            select(col(ApiKey.id), col(ApiKey.name), col(ApiKey.role)).where(
                col(ApiKey.name) == name, col(ApiKey.revoked_at).is_(None)
            )
        )
    ).first()


async def find_live_key_by_id(session: AsyncSession, key_id: Any) -> Any:
    """(id, name, role) of the unrevoked key with this id, or None: a console link."""
    try:
        wanted = uuid.UUID(str(key_id))
    except ValueError:
        return None
    return (
        await session.execute(
            select(col(ApiKey.id), col(ApiKey.name), col(ApiKey.role)).where(
                col(ApiKey.id) == wanted, col(ApiKey.revoked_at).is_(None)
            )
        )
    ).first()
