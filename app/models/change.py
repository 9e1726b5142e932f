"""The change feed sync clients read (`GET /v1/changes?after=N`), and idempotency keys."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Identity, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field


class Change(SQLModel, table=True):
    __tablename__ = "changes"

    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    kind: str = Field(max_length=40)
    subject_id: uuid.UUID | None = None
    email_hash: str | None = Field(default=None, max_length=64)
    purpose: str | None = Field(default=None, max_length=63)
    at: datetime = timestamp_field()
    # The writing transaction: readers only pass a seq once every older transaction has
    # finished, so a late commit of a lower seq is never skipped.
    txid: int = Field(
        sa_column=Column(
            "txid",
            BigInteger,
            nullable=False,
            server_default=text("pg_current_xact_id()::text::bigint"),
        )
    )


class ChangePublic(SQLModel):
    seq: int
    kind: str
    subject_id: uuid.UUID | None
    email_hash: str | None
    purpose: str | None
    at: datetime


class ChangePage(SQLModel):
    items: list[ChangePublic]
    next_after: int


class IdempotencyKey(SQLModel, table=True):
    """One row per (API key, Idempotency-Key): the first request's fingerprint and answer."""

    __tablename__ = "idempotency_keys"

    owner_key_id: uuid.UUID = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    status_code: int | None = None
    body: dict[str, Any] | list[Any] | None = Field(default=None, sa_column=Column(JSONB))
    created_at: datetime = timestamp_field()
