"""Data-subject rights requests (§10, Art 12-22)."""

import uuid
from datetime import date, datetime
from typing import Any, Literal, Self

from pydantic import ConfigDict, model_validator
from sqlalchemy import BigInteger, Column, Identity, Index, SmallInteger, String, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from app.models.base import EventDateOrDateTime, timestamp_field
from app.models.subject import Email, SubjectUpdate

RightType = Literal[
    "access",
    "portability",
    "rectification",
    "erasure",
    "restriction",
    "withdraw_consent",
    "object_marketing",
    "object_processing",
]
RightStatus = Literal["received", "identity_verified", "completed", "rejected"]
IdentityMethod = Literal["email", "document", "known_contact", "other"]
# `link`: the request came through the person's signed preference link, which only the
# holder of the mailbox has (issue 12); recorded by the service, not claimable by a client.
# `email_link`: the person confirmed the request from a link e-mailed to the address.
RecordedIdentityMethod = Literal[
    "email", "document", "known_contact", "other", "link", "email_link"
]
RejectionCode = Literal[
    "identity_not_confirmed",
    "manifestly_unfounded",
    "manifestly_excessive",
    "legal_exemption",
    "other",
]
DEFAULT_REJECTION_CODE = "other"
OPEN_STATUSES = ("received", "identity_verified")
# Stop the clock (ICO guidance on Art 12(3)): what the controller is waiting for.
PauseReason = Literal["awaiting_identity", "awaiting_clarification", "awaiting_fee"]


class RightsRequest(SQLModel, table=True):
    __tablename__ = "rights_requests"
    __table_args__ = (
        Index("ix_rights_requests_status_due", "status", "due_at"),
        Index("ix_rights_requests_subject", "subject_id"),
        Index(
            "ix_rights_requests_paused",
            "paused_since",
            postgresql_where=text("paused_since IS NOT NULL"),
        ),
    )

    id: uuid.UUID = Field(primary_key=True)
    type: str = Field(max_length=30)
    subject_id: uuid.UUID | None = Field(default=None, foreign_key="subjects.id")
    email: str | None = Field(default=None, max_length=254)  # erased with the subject
    email_hash: str | None = Field(default=None, max_length=64)
    email_hash_key: int = Field(default=0, sa_type=SmallInteger)  # which key made the hash
    details: str | None = Field(default=None, max_length=5000)
    status: str = Field(max_length=20)
    received_at: datetime = timestamp_field()
    due_at: date
    extended_months: int = 0
    extension_reason: str | None = Field(default=None, max_length=2000)
    identity_method: str | None = Field(default=None, max_length=20)
    identity_note: str | None = Field(default=None, max_length=2000)
    rejection_code: str | None = Field(default=None, max_length=30)
    rejection_article: str | None = Field(default=None, max_length=50)
    rejection_reason: str | None = Field(default=None, max_length=2000)
    purposes: list[str] | None = Field(default=None, sa_column=Column(ARRAY(String)))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    completed_at: datetime | None = timestamp_field(default=None, nullable=True)
    created_by: str = Field(max_length=100)
    updated_at: datetime = timestamp_field()
    # Stop the clock: set while paused; the ended pauses' calendar days are in paused_days.
    paused_since: datetime | None = timestamp_field(default=None, nullable=True)
    pause_reason: str | None = Field(default=None, max_length=30)
    paused_days: int = 0


class RightsRequestEvent(SQLModel, table=True):
    """Append-only transitions: who, when, why."""

    __tablename__ = "rights_request_events"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    request_id: uuid.UUID = Field(foreign_key="rights_requests.id", index=True)
    action: str = Field(max_length=30)
    actor: str = Field(max_length=100)
    at: datetime = timestamp_field()
    # Never personal data in clear: rectification keeps old values only as keyed hashes.
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))


class RightsRequestCreate(SQLModel):
    """Give exactly one of `subject_id` or `email`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # type: ignore[assignment]

    type: RightType
    subject_id: uuid.UUID | None = None
    email: Email | None = None
    details: str | None = Field(default=None, max_length=5000)
    received_at: EventDateOrDateTime | None = Field(
        default=None,
        description="When the request reached the controller (default: now). Any past date "
        "from 2000 on is accepted, a date alone meaning the start of that day, UK time (a "
        "letter entered late); a time in the future is refused with 422.",
    )

    @model_validator(mode="after")
    def _one_reference(self) -> Self:
        if (self.subject_id is None) == (self.email is None):
            raise ValueError("give exactly one of `subject_id` or `email`")
        return self


class VerifyIdentity(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    method: IdentityMethod
    note: str | None = Field(default=None, max_length=2000)


class Extend(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    months: Literal[1, 2]
    reason: str = Field(min_length=3, max_length=2000)


class Pause(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    reason: PauseReason
    # Kept out of the history and the audit log (it may name the person); erased with them.
    note: str | None = Field(default=None, max_length=2000)


class Complete(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]
    changes: SubjectUpdate | None = None
    purposes: list[str] | None = Field(default=None, max_length=50)


class Reject(SQLModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # type: ignore[assignment]
    reason: str = Field(
        min_length=1, max_length=2000, description="Why the request is refused (required)."
    )
    code: RejectionCode = Field(
        default=DEFAULT_REJECTION_CODE,
        description="The kind of refusal; `other` when not given. `legal_exemption` needs "
        "`article`.",
    )
    article: str | None = Field(
        default=None, min_length=1, max_length=50, description="The exemption relied on."
    )

    @model_validator(mode="after")
    def _article(self) -> Self:
        if self.code == "legal_exemption" and not self.article:
            raise ValueError("a legal exemption names its `article`")
        return self


class RightsRequestPublic(SQLModel):
    id: uuid.UUID
    type: RightType
    subject_id: uuid.UUID | None
    status: RightStatus
    received_at: datetime
    due_at: date
    overdue: bool
    extended_months: int
    extension_reason: str | None
    identity_method: RecordedIdentityMethod | None = Field(
        description="How identity was verified; `link`: the person made the request on their"
        " own page, reached by a signed e-mail link (written by the service only)."
    )
    rejection_code: str | None
    rejection_article: str | None
    rejection_reason: str | None
    purposes: list[str] | None
    outcome: dict[str, Any] | None  # what completing did (no personal data)
    completed_at: datetime | None
    history: list[dict[str, Any]] = Field(default_factory=list)
    paused: bool = Field(
        default=False,
        description="The clock is stopped (awaiting identity, clarification or a fee): "
        "the request is not overdue, and on resume the due date moves by the paused days.",
    )
    paused_since: datetime | None = Field(default=None, description="When the running pause began.")
    pause_reason: PauseReason | None = Field(default=None, description="Why it is paused.")
    paused_days: int = Field(
        default=0, description="Calendar days of the ended pauses, already in `due_at`."
    )


class RightsReport(SQLModel):
    by_type: dict[str, int]
    by_status: dict[str, int]
    overdue: list[dict[str, Any]]
    median_days_to_complete: float | None
    completed: int
    paused: int = Field(default=0, description="Requests paused now (stop the clock).")
    days_paused: int = Field(
        default=0,
        description="Calendar days paused across all requests: ended pauses, and running "
        "ones up to today.",
    )
