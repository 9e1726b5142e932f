"""The append-only audit log and its signed checkpoints (see ARCHITECTURE.md)."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Identity, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field


class AuditEntry(SQLModel, table=True):
    """One change or decision. Writers insert unsealed rows without locks; the sealer
    later assigns `position` and `hash` in one chain."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_unsealed", "id", postgresql_where=text("position IS NULL")),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    at: datetime = timestamp_field(sa_column_kwargs={"server_default": text("now()")})
    actor_key_id: uuid.UUID | None = None
    actor_name: str = Field(max_length=100)
    actor_role: str = Field(max_length=20)
    action: str = Field(max_length=60)
    entity: str = Field(max_length=40)
    entity_id: str | None = Field(default=None, max_length=100)
    # What changed, never personal data: field names, purpose keys, outcomes.
    digest: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    # Partitioned by month on `at` (migration 0012): the primary key is (id, at) in the
    # database and `position` is indexed, not unique (a unique index would need `at`).
    position: int | None = Field(default=None, sa_type=BigInteger, index=True)
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)


class AuditEntryPublic(SQLModel):
    id: int
    at: datetime
    actor_name: str
    actor_role: str
    action: str
    entity: str
    entity_id: str | None
    digest: dict[str, Any]
    position: int | None
    prev_hash: str | None
    hash: str | None


class AuditCheckpoint(SQLModel, table=True):
    """A signed (position, head hash): proof of the chain up to `position`."""

    __tablename__ = "audit_checkpoints"

    position: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    head_hash: str = Field(max_length=64)
    signed_at: datetime = timestamp_field()
    key_id: str = Field(max_length=64)
    # Compact JWS over {"position", "head_hash", "signed_at"}.
    signature: str


class AuditCheckpointPublic(SQLModel):
    position: int
    head_hash: str
    signed_at: datetime
    key_id: str
    signature: str
