"""Processing decisions (Art 6 before any processing) and their stored proof (Art 5(2))."""

import uuid
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, ConfigDict, EmailStr, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import Column, Index, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field
from app.models.catalogue import KEY_PATTERN
from app.models.subject import Email
from app.models.text import MAX_ADDRESS

Reason = Literal[
    "subject_unknown",
    "subject_erased",
    "subject_merged",
    "restricted",
    "retention_expired",
    "no_lawful_basis",
    "basis_not_allowed",
    "consent_missing",
    "consent_withdrawn",
    # The consent was given under a policy version older than one that asks for it again
    # (`reconsent_purposes` on POST /v1/policies).
    "consent_outdated",
    # Given longer ago than the purpose's `consent_valid_months` (a new `given` allows again).
    "consent_expired",
    "contract_ended",
    "objected",
    "marketing_opt_out",
    "transfer_not_permitted",
    "recipient_not_for_purpose",
]
MAX_BATCH = 1000
REASONS_DESCRIPTION = (
    "Every reason that applies, in the order of the rules; empty when allowed. Besides the "
    "codes API.md lists: `consent_outdated`, consent rests on a policy version older than one "
    "that asks for this purpose's consent again (a new `given` under that version or a later "
    "one allows again); `consent_expired`, the consent was given longer ago than the purpose's "
    "`consent_valid_months` (a new `given` starts a new period); `recipient_not_for_purpose`, "
    "the recipient named is not one the catalogue lists for this purpose (§6; e.g. `surveys` "
    "to a partner)."
)


class Decision(SQLModel, table=True):
    """Partitioned by month on `decided_at` (migration 0012); the database's primary key is
    (id, decided_at), ids being random UUIDs."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_subject_at", "subject_id", "decided_at"),)

    id: uuid.UUID = Field(primary_key=True)
    decided_at: datetime = timestamp_field()
    requester_key_id: uuid.UUID | None = None
    requester_name: str = Field(max_length=100)
    requester_role: str = Field(max_length=20)
    # Null when no subject matched the reference (an e-mail is never stored here).
    subject_id: uuid.UUID | None = None
    purpose: str = Field(max_length=63)
    recipient: str | None = Field(default=None, max_length=63)
    allowed: bool
    basis: str | None = Field(default=None, max_length=30)
    reasons: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))


class DecisionTarget(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    purpose: str = Field(max_length=63, regex=KEY_PATTERN)
    recipient: str | None = Field(default=None, max_length=63, regex=KEY_PATTERN)


class DecisionRequest(DecisionTarget):
    """Give exactly one of `subject_id` or `email`; `purpose` and `recipient` are keys of
    `GET /v1/purposes` and `GET /v1/recipients`."""

    subject_id: uuid.UUID | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> Self:
        if (self.subject_id is None) == (self.email is None):
            raise ValueError("give exactly one of `subject_id` or `email`")
        return self


def _not_longer_than_an_address(value: object) -> object:
    """Refused before email-validator sees it: no address is longer (RFC 5321), and parsing
    a long international one costs up to a millisecond."""
    if isinstance(value, str) and len(value) > MAX_ADDRESS:
        raise ValueError(f"is longer than an e-mail address ({MAX_ADDRESS} characters)")
    return value


class BatchDecisionRequest(DecisionTarget):
    # Left to right: an id is taken as an id at once, not also tried as an e-mail address
    # (that check cost three quarters of a 1000-subject batch's CPU).
    subjects: list[
        Annotated[
            uuid.UUID | EmailStr,
            PydanticField(union_mode="left_to_right"),
            BeforeValidator(_not_longer_than_an_address),
        ]
    ] = Field(min_length=1, max_length=MAX_BATCH)


class DecisionPublic(SQLModel):
    id: uuid.UUID
    subject_id: uuid.UUID | None
    purpose: str
    recipient: str | None
    allowed: bool
    basis: str | None
    reasons: list[Reason] = Field(description=REASONS_DESCRIPTION)
    decided_at: datetime
    merged_into: uuid.UUID | None = Field(
        default=None,
        description="Only with `subject_merged`: the subject this one was merged into, which"
        " answers for the person now",
    )


class BatchDecisionItem(DecisionPublic):
    subject: str  # the reference as given


class BatchDecisionPublic(SQLModel):
    purpose: str
    recipient: str | None
    items: list[BatchDecisionItem]
