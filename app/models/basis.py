"""Lawful bases (§9, Art 6) per subject and purpose: the current one and its history."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, model_validator
from sqlalchemy import BigInteger, Column, Identity, Index
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.models.base import DateOrDateTime, EndDateOrDateTime, timestamp_field
from app.models.catalogue import LawfulBasis

REQUIRED_DETAIL = {
    "contract": "contract_ref",
    "legitimate_interests": "lia_ref",
    "legal_obligation": "obligation",
}


class BasisFields(SQLModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # type: ignore[assignment]

    basis: LawfulBasis
    contract_ref: str | None = Field(default=None, max_length=200)
    contract_start: DateOrDateTime | None = None
    contract_end: EndDateOrDateTime | None = None
    lia_ref: str | None = Field(default=None, max_length=200)
    obligation: str | None = Field(default=None, max_length=500)
    note: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _detail_for_basis(self) -> "BasisFields":
        needed = REQUIRED_DETAIL.get(self.basis)
        if needed and not getattr(self, needed):
            raise ValueError(f"`{needed}` is required for the basis `{self.basis}`")
        if self.contract_start and self.contract_end and self.contract_end < self.contract_start:
            raise ValueError("`contract_end` is before `contract_start`")
        return self


class LawfulBasisSet(BasisFields):
    pass


class LawfulBasisRecord(SQLModel, table=True):
    """The basis a (subject, purpose) relationship rests on now."""

    __tablename__ = "lawful_bases"
    __table_args__ = (
        Index("ix_lawful_bases_contracts", "subject_id", "basis", "contract_end"),
        # A purpose's subjects, for the console's preview of a catalogue change (0029).
        Index("ix_lawful_bases_purpose", "purpose", "subject_id"),
    )

    subject_id: uuid.UUID = Field(foreign_key="subjects.id", primary_key=True)
    purpose: str = Field(foreign_key="purposes.key", primary_key=True, max_length=63)
    basis: str = Field(max_length=30)
    contract_ref: str | None = Field(default=None, max_length=200)
    contract_start: datetime | None = timestamp_field(default=None, nullable=True)
    contract_end: datetime | None = timestamp_field(default=None, nullable=True)
    lia_ref: str | None = Field(default=None, max_length=200)
    obligation: str | None = Field(default=None, max_length=500)
    note: str | None = Field(default=None, max_length=1000)
    set_by: str = Field(max_length=100)
    set_at: datetime = timestamp_field()


class LawfulBasisPublic(SQLModel):
    subject_id: uuid.UUID
    purpose: str
    basis: LawfulBasis
    contract_ref: str | None
    contract_start: datetime | None
    contract_end: datetime | None
    lia_ref: str | None
    obligation: str | None
    note: str | None
    set_by: str
    set_at: datetime


class LawfulBasisHistory(SQLModel, table=True):
    """Append-only: every set and end, with the value it replaced."""

    __tablename__ = "lawful_basis_history"
    __table_args__ = (Index("ix_lawful_basis_history_subject", "subject_id", "purpose", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    subject_id: uuid.UUID = Field(foreign_key="subjects.id")
    purpose: str = Field(max_length=63)
    action: str = Field(max_length=10)  # set | ended
    value: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    previous: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    actor: str = Field(max_length=100)
    at: datetime = timestamp_field()


class LawfulBasisHistoryPublic(SQLModel):
    id: int
    subject_id: uuid.UUID | None = Field(
        default=None,
        description="The subject the entry was recorded for: this one, or one merged into it",
    )
    purpose: str
    action: str
    value: dict[str, Any] | None
    previous: dict[str, Any] | None
    actor: str
    at: datetime
