"""The controller's identity (§1, §11): one catalogue row, the only source of who the
controller is wherever that is shown (receipts, consent proofs, the record of processing,
access reports, the person's pages). An admin replaces it; the change is audited.

Cold paths call `shown` (or `identity`). The consent write and the ledger's reads compose
`IDENTITY_SQL` into the statement they already run, so that a receipt costs no extra round
trip, and turn its value into the same model with `parse`.
"""

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.models.controller import Controller, ControllerPublic, ControllerUpdate
from app.services.audit import entries as audit

# The row as JSON text (every column but the key): text, not jsonb, because the asyncpg
# pool decodes no JSON while SQLAlchemy's connections do; `parse` reads it either way.
IDENTITY_SQL = "(SELECT CAST(to_jsonb(c) - 'id' AS text) FROM controller c)"
READ = text(f"SELECT {IDENTITY_SQL}")


class ControllerMissing(RuntimeError):
    """The row migration 0019 seeds is gone (nothing in the service deletes it)."""


def parse(value: str | None) -> ControllerPublic:
    """The identity from `IDENTITY_SQL`'s value."""
    if value is None:
        raise ControllerMissing(
            "The controller's identity is missing: set it with PUT /v1/controller."
        )
    return ControllerPublic.model_validate_json(value)


def document(controller: ControllerPublic) -> dict[str, Any]:
    """The identity as proofs, reports and pages show it (API.md's field names)."""
    return controller.model_dump(mode="json", exclude={"updated_at"})


async def identity(session: AsyncSession) -> ControllerPublic:
    """The one read of the controller's row."""
    return parse((await session.execute(READ)).scalar_one())


async def shown(session: AsyncSession) -> dict[str, Any]:
    """Who the controller is, as every document that names it shows it."""
    return document(await identity(session))


async def put(
    session: AsyncSession, principal: Principal, *, data: ControllerUpdate
) -> ControllerPublic:
    """Replace the identity (the row is created again should it ever be missing). The audit
    entry keeps what it replaced: who the controller was is part of the record."""
    before = (await session.execute(select(Controller).with_for_update())).scalar_one_or_none()
    values = data.model_dump()
    statement = pg_insert(Controller).values(id=True, updated_at=func.now(), **values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"], set_={**values, "updated_at": func.now()}
        )
    )
    await audit.record(
        session,
        principal,
        "controller.put",
        "controller",
        None,
        **data.model_dump(mode="json"),
        previous=None if before is None else _fields(before),
    )
    return await identity(session)


def _fields(row: Controller) -> dict[str, Any]:
    return {name: getattr(row, name) for name in ControllerUpdate.model_fields}
