"""Catalogues: purposes, recipients, policy versions (admin writes, everyone reads)."""

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from app.core.auth import Principal
from app.core.errors import Conflict
from app.core.pagination import Page, decode_cursor, encode_cursor, page_of
from app.models.catalogue import (
    Category,
    Policy,
    PolicyCreate,
    Purpose,
    PurposeUpdate,
    Recipient,
    RecipientUpdate,
    Source,
)
from app.services.audit import entries as audit
from app.services.catalogue.known import unknown_key
from app.services.changes import clock

Row = TypeVar("Row", Category, Source, Purpose, Recipient)


async def list_keyed(
    session: AsyncSession, model: type[Row], *, limit: int, cursor: str | None
) -> Page[Row]:
    """A page of a catalogue keyed by `key`, in key order."""
    stmt = select(model).order_by(col(model.key)).limit(limit + 1)
    after = decode_cursor(cursor, 1)
    if after is not None:
        stmt = stmt.where(col(model.key) > str(after[0]))
    rows = list((await session.execute(stmt)).scalars())
    return page_of(rows, limit, lambda r: encode_cursor([r.key]), lambda r: r)


async def entry(session: AsyncSession, model: type[Row], key: str) -> Row | None:
    """One entry by its key (None: there is none yet)."""
    return await session.get(model, key)


async def descriptions(
    session: AsyncSession, model: type[Category | Source | Purpose]
) -> dict[str, str]:
    """Every entry's description by key: the words the pages show instead of the key."""
    rows = await session.execute(select(col(model.key), col(model.description)))
    return {key: description for key, description in rows.all()}


async def _upsert(
    session: AsyncSession, principal: Principal, model: type[Row], key: str, data: SQLModel
) -> tuple[Row, bool]:
    row = await session.get(model, key)
    created = row is None
    if row is None:
        row = model(key=key, **data.model_dump())
        session.add(row)
    else:
        for field, value in data.model_dump().items():
            setattr(row, field, value)
    await session.flush()
    await audit.record(
        session,
        principal,
        f"{model.__tablename__}.put",
        model.__tablename__,
        key,
        created=created,
        **data.model_dump(mode="json"),
    )
    return row, created


async def put_purpose(
    session: AsyncSession, principal: Principal, *, key: str, data: PurposeUpdate
) -> tuple[Purpose, bool]:
    before = await session.get(Purpose, key)
    period = before.consent_valid_months if before is not None else None
    row, created = await _upsert(session, principal, Purpose, key, data)
    if row.consent_valid_months != period:
        # Every consent given for the purpose now ends elsewhere (or never): the gate's clock
        # must hold the new instants, or sync would keep people the gate denies.
        await clock.schedule_purpose(session, key)
    return row, created


async def put_recipient(
    session: AsyncSession, principal: Principal, *, key: str, data: RecipientUpdate
) -> tuple[Recipient, bool]:
    if data.purposes:
        await require_purposes(session, data.purposes)
    if not data.inside_eea_uk and data.transfer_safeguard is None:
        # §8: outside the EEA/UK only with the subject's explicit consent, unless an
        # admin names another safeguard.
        data = data.model_copy(update={"transfer_safeguard": "explicit_consent"})
    if data.inside_eea_uk:
        data = data.model_copy(update={"transfer_safeguard": None})
    return await _upsert(session, principal, Recipient, key, data)


async def list_policies(session: AsyncSession, *, limit: int, cursor: str | None) -> Page[Policy]:
    stmt = select(Policy).order_by(col(Policy.version)).limit(limit + 1)
    after = decode_cursor(cursor, 1)
    if after is not None:
        stmt = stmt.where(col(Policy.version) > str(after[0]))
    rows = list((await session.execute(stmt)).scalars())
    return page_of(rows, limit, lambda r: encode_cursor([r.version]), lambda r: r)


async def create_policy(
    session: AsyncSession, principal: Principal, *, data: PolicyCreate
) -> Policy:
    if data.reconsent_purposes:
        await require_purposes(session, data.reconsent_purposes, field="reconsent_purposes")
    policy = Policy(**data.model_dump())
    try:
        async with session.begin_nested():
            session.add(policy)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"Policy version `{data.version}` already exists.") from exc
    await audit.record(
        session,
        principal,
        "policies.create",
        "policy",
        policy.id,
        version=data.version,
        reconsent_purposes=data.reconsent_purposes,
    )
    return policy


async def require_purposes(
    session: AsyncSession, purposes: list[str], *, field: str = "purposes"
) -> None:
    """422 naming any key that is not in the purposes catalogue."""
    known = set(
        (
            await session.execute(select(col(Purpose.key)).where(col(Purpose.key).in_(purposes)))
        ).scalars()
    )
    unknown = sorted(set(purposes) - known)
    if unknown:
        raise await unknown_key(session, "purpose", unknown, field=field)
