"""Data subjects (§2) and the only fields held about them (§3, data minimisation)."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, StringConstraints
from sqlalchemy import CheckConstraint, Index, SmallInteger, text
from sqlmodel import Field, SQLModel

from app.models.base import DateOrDateTime, timestamp_field, utcnow
from app.models.text import Email, SafeLine, SafeLines, normalise_email

__all__ = ["Email", "normalise_email"]

SubjectStatus = Literal["active", "restricted", "erased"]
PERSONAL_FIELDS = ("email", "name", "phone", "mobile", "job_title", "company", "business_address")


Phone = Annotated[str, StringConstraints(min_length=3, max_length=50, pattern=r"^[0-9+() .\-]+$")]


class SubjectFields(SQLModel):
    """The personal fields of §3, and where they came from (§4)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # type: ignore[assignment]

    name: SafeLine | None = Field(default=None, min_length=1, max_length=200)
    phone: Phone | None = None
    mobile: Phone | None = None
    job_title: SafeLine | None = Field(default=None, min_length=1, max_length=200)
    company: SafeLine | None = Field(default=None, min_length=1, max_length=200)
    business_address: SafeLines | None = Field(default=None, min_length=1, max_length=1000)
    source_detail: SafeLine | None = Field(default=None, max_length=500)


class SubjectCreate(SubjectFields):
    email: Email
    category: str = Field(max_length=63)
    source: str = Field(max_length=63)


class SubjectUpdate(SubjectFields):
    email: Email | None = None
    category: str | None = Field(default=None, max_length=63)
    source: str | None = Field(default=None, max_length=63)
    interest_ceased_at: DateOrDateTime | None = None


class Subject(SQLModel, table=True):
    __tablename__ = "subjects"
    __table_args__ = (
        # Unique among live subjects: an erased subject's e-mail is null anyway, but
        # the predicate keeps the rule explicit.
        Index(
            "uq_subjects_email_live",
            "email",
            unique=True,
            postgresql_where=text("erased_at IS NULL"),
        ),
        Index("ix_subjects_created_at_id", "created_at", "id"),
        Index(
            "ix_subjects_merged_into",
            "merged_into",
            postgresql_where=text("merged_into IS NOT NULL"),
        ),
        CheckConstraint("merged_into IS DISTINCT FROM id", name="ck_subjects_not_merged_into_self"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str | None = Field(default=None, max_length=254)
    # HMAC of the normalised e-mail: how the gate matches opt-outs without clear text.
    email_hash: str | None = Field(default=None, max_length=64, index=True)
    email_hash_key: int = Field(default=0, sa_type=SmallInteger)  # which key made the hash
    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=50)
    mobile: str | None = Field(default=None, max_length=50)
    job_title: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=200)
    business_address: str | None = Field(default=None, max_length=1000)
    category: str = Field(foreign_key="categories.key", max_length=63, index=True)
    source: str = Field(foreign_key="sources.key", max_length=63)
    source_detail: str | None = Field(default=None, max_length=500)
    # Art 18: while set, the gate denies everything except storage.
    restricted: bool = False
    interest_ceased_at: datetime | None = timestamp_field(default=None, nullable=True)
    erased_at: datetime | None = timestamp_field(default=None, nullable=True)
    created_at: datetime = timestamp_field(default_factory=utcnow)
    updated_at: datetime = timestamp_field(default_factory=utcnow)
    # The same person held twice (Art 5(1)(d)): this subject was merged into that one, whose
    # reads include this one's records; nothing of this one is rewritten.
    merged_into: uuid.UUID | None = Field(default=None, foreign_key="subjects.id")
    merged_at: datetime | None = timestamp_field(default=None, nullable=True)


class SubjectPublic(SQLModel):
    id: uuid.UUID
    email: str | None
    name: str | None
    phone: str | None
    mobile: str | None
    job_title: str | None
    company: str | None
    business_address: str | None
    category: str
    source: str
    source_detail: str | None
    status: SubjectStatus
    interest_ceased_at: datetime | None
    erased_at: datetime | None
    created_at: datetime
    updated_at: datetime
    merged_into: uuid.UUID | None = Field(
        default=None,
        description="Set once this subject was merged into that one (the same person held"
        " twice): read that one; decisions on this one answer `subject_merged`.",
    )


class SubjectMerge(SQLModel):
    """`POST /v1/subjects/{id}/merge`: the other subject, which `{id}` absorbs."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    from_: uuid.UUID = Field(alias="from", description="The subject merged into `{id}`")


class SubjectMergePublic(SQLModel):
    """What a merge did: the survivor as it now reads, and what it took over."""

    subject: SubjectPublic
    merged: uuid.UUID = Field(description="The subject now marked `merged_into`")
    merged_at: datetime
    consents_taken: list[str] = Field(
        description="Purposes (`purpose` or `purpose:recipient`) where the merged subject's"
        " newer consent event now decides"
    )
    bases_set: list[str] = Field(
        description="Purposes whose basis only the merged subject had, now set on `{id}`"
    )
    objections_added: list[str]
    opt_outs_carried: int = Field(
        description="Opt-outs of the merged subject's address now held for `{id}`'s too"
    )


def subject_status(subject: Subject) -> SubjectStatus:
    if subject.erased_at is not None:
        return "erased"
    return "restricted" if subject.restricted else "active"


def to_public(subject: Subject) -> SubjectPublic:
    return SubjectPublic.model_validate({**subject.model_dump(), "status": subject_status(subject)})
