"""The controller's identity (§1, §11): one catalogue row, seeded from the policy by migration
0019 and replaced by an admin with `PUT /v1/controller`. Receipts, consent proofs, the record
of processing (Art 30(1)(a)), access reports (Art 15) and the person's pages show it
(Art 13(1)(a)-(b), (d))."""

from datetime import datetime

from pydantic import ConfigDict
from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field, utcnow
from app.models.subject import Phone
from app.models.text import Email, SafeLine, SafeLines

# Column sizes, shared by the table, the migration and the validation of a PUT.
NAME_MAX, ADDRESS_MAX, AUTHORITY_MAX, EMAIL_MAX = 200, 1000, 300, 254


class ControllerUpdate(SQLModel):
    """The whole identity: a PUT replaces every field (an optional one left out is null)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # type: ignore[assignment]

    name: SafeLine = Field(min_length=1, max_length=NAME_MAX, description="Legal name")
    email: Email = Field(description="Where a person writes about their data (§11)")
    address: SafeLines = Field(
        min_length=1, max_length=ADDRESS_MAX, description="Postal address, one string"
    )
    phone: Phone | None = None
    dpo_email: Email | None = Field(
        default=None, description="The data protection officer's contact; null: none appointed"
    )
    representative: SafeLines | None = Field(
        default=None,
        min_length=1,
        max_length=ADDRESS_MAX,
        description="Art 27 representative's name and contact; null: none",
    )
    supervisory_authority: SafeLine = Field(
        min_length=1,
        max_length=AUTHORITY_MAX,
        description="Where a person may complain (Art 13(2)(d), 77)",
    )


class ControllerPublic(SQLModel):
    """As stored. Plain strings: a row seeded from settings is shown even if it would not
    pass today's checks of a PUT."""

    name: str
    email: str
    address: str
    phone: str | None = None
    dpo_email: str | None = None
    representative: str | None = None
    supervisory_authority: str
    updated_at: datetime


class Controller(SQLModel, table=True):
    """The one row (its key is always true, so a second row cannot exist)."""

    __tablename__ = "controller"
    __table_args__ = (CheckConstraint("id", name="one_row"),)

    id: bool = Field(default=True, primary_key=True)
    name: str = Field(max_length=NAME_MAX)
    email: str = Field(max_length=EMAIL_MAX)
    address: str = Field(max_length=ADDRESS_MAX)
    phone: str | None = Field(default=None, max_length=50)
    dpo_email: str | None = Field(default=None, max_length=EMAIL_MAX)
    representative: str | None = Field(default=None, max_length=ADDRESS_MAX)
    supervisory_authority: str = Field(max_length=AUTHORITY_MAX)
    updated_at: datetime = timestamp_field(default_factory=utcnow)
