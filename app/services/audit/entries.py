"""Appending to the audit log (the sealer and verification live in audit_chain)."""

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.models.audit import AuditEntry

# The one INSERT of an audit entry: `record` below, and the set-based statements that store
# decisions or consent events select their entries into it (one column list, one place).
INSERT_AUDIT_ENTRY = (
    "INSERT INTO audit_entries"
    " (actor_key_id, actor_name, actor_role, action, entity, entity_id, digest)"
)


def entry_values(
    principal: Principal | None, action: str, entity: str, entity_id: Any, **digest: Any
) -> dict[str, Any]:
    return {
        "actor_key_id": principal.key_id if principal else None,
        "actor_name": principal.name if principal else "system",
        "actor_role": principal.role if principal else "system",
        "action": action,
        "entity": entity,
        "entity_id": None if entity_id is None else str(entity_id),
        "digest": digest,
    }


async def record(
    session: AsyncSession,
    principal: Principal | None,
    action: str,
    entity: str,
    entity_id: uuid.UUID | str | None,
    **digest: Any,
) -> None:
    """Append an unsealed entry in the caller's transaction: it exists iff the write commits.
    No lock is taken; the sealer orders and chains entries later."""
    await session.execute(
        insert(AuditEntry).values(**entry_values(principal, action, entity, entity_id, **digest))
    )
