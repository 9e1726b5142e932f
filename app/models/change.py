"""The change feed sync clients read (`GET /v1/changes?after=N`), and idempotency keys."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Identity
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field


class Change(SQLModel, table=True):
    __tablename__ = "changes"

    # Insertion order only: a transaction that took a lower id may commit later.
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    # The feed position, given to committed rows in commit order by one sequencer at a time
    # (`changes.sequence_pending`): a reader paging by it never skips a late commit.
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, unique=True))
    kind: str = Field(max_length=40)
    subject_id: uuid.UUID | None = None
    email_hash: str | None = Field(default=None, max_length=64)
    purpose: str | None = Field(default=None, max_length=63)
    at: datetime = timestamp_field()


class GateMoment(SQLModel, table=True):
    """An instant at which time alone changes the gate's answer for a subject (and purpose),
    kept by the writes that create it (`app.services.changes.clock`), fed to the change feed
    once passed (`fed_at`)."""

    __tablename__ = "gate_moments"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    subject_id: uuid.UUID = Field(foreign_key="subjects.id", ondelete="CASCADE")
    purpose: str | None = Field(default=None, max_length=63)
    kind: str = Field(max_length=40)
    due_at: datetime = timestamp_field()
    fed_at: datetime | None = timestamp_field(default=None, nullable=True)


class ChangePublic(SQLModel):
    seq: int = Field(description="Feed position; pass the last one seen as `after`")
    kind: str = Field(
        description="What changed: subject.created, subject.updated, subject.restricted,"
        " subject.unrestricted, subject.rectified, subject.erased, subject.erased_in_part,"
        " subject.merged (merged into another subject: it leaves every copy),"
        " consent.given,"
        " consent.withdrawn, consent.outdated (a policy version asking for consent again"
        " took effect), optout, objection, basis.set, basis.ended,"
        " contract.ended, contract.started (a contract's end or start date passed),"
        " interest.ceased (a prospect's interest ceased plus its grace period passed),"
        " retention.due (a retention period ran out),"
        " mailchimp.cleaned, mailchimp.upemail"
    )
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
