"""API key administration (used by the CLI; keys are never created over HTTP)."""

from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.auth import ROLES, generate_key, hash_key
from app.core.db import create_sessionmaker
from app.models.api_key import ApiKey
from app.services import audit


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


async def _with_session(url: str, fn: Any, **kwargs: Any) -> Any:
    from app.core.config import get_settings
    from app.core.db import create_engine

    engine = create_engine(url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            result = await fn(session, **kwargs)
            await session.commit()
            return result
    finally:
        await engine.dispose()


async def create_key_cli(url: str, *, name: str, role: str) -> str:
    try:
        return str(await _with_session(url, create_key, name=name, role=role))
    except KeyAdminError as exc:
        raise SystemExit(f"consent-api: {exc}") from exc


async def revoke_key_cli(url: str, *, name: str) -> bool:
    return bool(await _with_session(url, revoke_key, name=name))


async def _list(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(
            col(ApiKey.name), col(ApiKey.role), col(ApiKey.created_at), col(ApiKey.revoked_at)
        ).order_by(col(ApiKey.name))
    )
    return [dict(r._mapping) for r in rows]


async def list_keys_cli(url: str) -> list[dict[str, Any]]:
    return list(await _with_session(url, _list))
