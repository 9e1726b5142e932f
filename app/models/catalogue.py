"""Catalogues seeded from the policy and editable by an admin: categories, sources,
purposes, recipients and policy versions."""

import uuid
from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, StrictBool, StringConstraints, field_validator
from sqlalchemy import Column, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from app.models.base import Timestamp, timestamp_field, utcnow

LawfulBasis = Literal["contract", "legitimate_interests", "legal_obligation", "consent"]
LAWFUL_BASES: tuple[str, ...] = get_args(LawfulBasis)
RetentionRule = Literal["contract_end_plus", "interest_ceased", "fixed_period"]
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
CatalogueKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Category(SQLModel, table=True):
    """A kind of data subject (§2) with its retention rule (§7)."""

    __tablename__ = "categories"

    key: str = Field(primary_key=True, max_length=63)
    description: str
    retention_rule: str = Field(max_length=30)
    # Months after the rule's anchor (contract end, or creation for fixed_period).
    retention_months: int | None = None


class CategoryPublic(SQLModel):
    key: str
    description: str
    retention_rule: RetentionRule
    retention_months: int | None


class Source(SQLModel, table=True):
    """Where a subject's data came from (§4), reported on access (Art 14/15)."""

    __tablename__ = "sources"

    key: str = Field(primary_key=True, max_length=63)
    description: str


class SourcePublic(SQLModel):
    key: str
    description: str


class PurposeBase(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    description: str = Field(min_length=1, max_length=2000)
    allowed_bases: list[LawfulBasis] = Field(min_length=1)
    direct_marketing: StrictBool
    consent_valid_months: int | None = Field(
        default=None,
        ge=1,
        le=1200,
        description="How long a consent for this purpose lasts, in months from when it was "
        "given; after that the gate denies `consent_expired` until it is given again. "
        "Null: a consent lasts until it is withdrawn.",
    )

    @field_validator("allowed_bases")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return sorted(set(v))


class Purpose(SQLModel, table=True):
    """A purpose of processing (§5, §6, §9) and the lawful bases it may rest on."""

    __tablename__ = "purposes"

    key: str = Field(primary_key=True, max_length=63)
    description: str
    allowed_bases: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    direct_marketing: bool
    consent_valid_months: int | None = None  # null: a consent lasts until withdrawn


class PurposeUpdate(PurposeBase):
    pass


class PurposePublic(PurposeBase):
    model_config = ConfigDict(extra="ignore")  # type: ignore[assignment]
    key: str


class RecipientBase(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str = Field(min_length=1, max_length=200)
    role: Literal["partner", "processor"]
    country: CountryCode = Field(description="ISO 3166-1 alpha-2")
    inside_eea_uk: StrictBool
    # Outside the EEA/UK: `explicit_consent` (per-subject transfer consent, as §8 says)
    # or a named safeguard such as `adequacy_decision`; null inside the EEA/UK.
    transfer_safeguard: CatalogueKey | None = None
    purposes: list[CatalogueKey] = Field(default_factory=list)


class Recipient(SQLModel, table=True):
    """Someone personal data is handed to (§6, §8)."""

    __tablename__ = "recipients"

    key: str = Field(primary_key=True, max_length=63)
    name: str
    role: str = Field(max_length=20)
    country: str = Field(max_length=2)
    inside_eea_uk: bool
    transfer_safeguard: str | None = Field(default=None, max_length=63)
    purposes: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))


class RecipientUpdate(RecipientBase):
    pass


class RecipientPublic(RecipientBase):
    model_config = ConfigDict(extra="ignore")  # type: ignore[assignment]
    key: str


class PolicyBase(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    version: str = Field(min_length=1, max_length=50)
    published_at: datetime | None = None
    url: str | None = Field(default=None, max_length=2000)
    text_sha256: Sha256Hex
    reconsent_purposes: list[CatalogueKey] = Field(
        default_factory=list,
        max_length=100,
        description="Purposes whose consents must be given again: a consent given under an "
        "earlier version stops counting from this version's `published_at` (or, without "
        "one, from when the version was recorded) and decisions deny it with reason "
        "`consent_outdated` until a new consent names this version or a later one. "
        "Versions are ordered by that moment, then by when they were recorded.",
    )

    @field_validator("reconsent_purposes")
    @classmethod
    def _sorted_unique(cls, v: list[str]) -> list[str]:
        return sorted(set(v))


class Policy(SQLModel, table=True):
    """A published version of the privacy policy; consent events name the one shown."""

    __tablename__ = "policies"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    version: str = Field(max_length=50, unique=True)
    published_at: datetime | None = timestamp_field(default=None, nullable=True)
    url: str | None = Field(default=None, max_length=2000)
    text_sha256: str = Field(max_length=64)
    created_at: datetime = timestamp_field(default_factory=utcnow)
    reconsent_purposes: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String), nullable=False, server_default="{}"),
    )
    # When the change feed was told which consents this version made outdated (once it
    # took effect; app.services.changes.feed).
    reconsent_fed_at: datetime | None = timestamp_field(default=None, nullable=True)


class PolicyCreate(PolicyBase):
    # RFC 3339 text with an offset, as other event times: a number (0 -> 1970) is refused.
    # PolicyPublic keeps a plain datetime: rows stored before this rule must still list.
    published_at: Timestamp | None = None


class PolicyPublic(PolicyBase):
    model_config = ConfigDict(extra="ignore")  # type: ignore[assignment]
    id: uuid.UUID
    created_at: datetime
