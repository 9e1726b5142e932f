"""Current-state tables the decision gate reads in one query. Each is updated in the same
transaction as the event that changes it (consent ledger, opt-outs, objections), so a
decision never replays history."""

import uuid
from datetime import datetime

from sqlalchemy import Index, SmallInteger
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field

NO_RECIPIENT = ""  # consent_state.recipient for consents that name no recipient


class ConsentState(SQLModel, table=True):
    """The newest consent event per (subject, purpose, recipient). `recipient` is set only
    for `international_transfer` (a transfer consent names its recipient, §8)."""

    __tablename__ = "consent_state"

    subject_id: uuid.UUID = Field(foreign_key="subjects.id", primary_key=True)
    purpose: str = Field(foreign_key="purposes.key", primary_key=True, max_length=63)
    recipient: str = Field(default=NO_RECIPIENT, primary_key=True, max_length=63)
    status: str = Field(max_length=10)  # given | withdrawn
    event_id: uuid.UUID | None = None
    occurred_at: datetime = timestamp_field()


class Objection(SQLModel, table=True):
    """An Art 21(1) objection to processing on legitimate interests for a purpose."""

    __tablename__ = "objections"

    subject_id: uuid.UUID = Field(foreign_key="subjects.id", primary_key=True)
    purpose: str = Field(foreign_key="purposes.key", primary_key=True, max_length=63)
    source: str = Field(max_length=30)
    objected_at: datetime = timestamp_field()


class MarketingOptOut(SQLModel, table=True):
    """A direct-marketing opt-out (Art 21(2)-(3), PECR), keyed by HMAC of the normalised
    e-mail so that it survives the subject's erasure."""

    __tablename__ = "marketing_optouts"
    __table_args__ = (
        Index("uq_marketing_optouts_email_channel", "email_hash", "channel", unique=True),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email_hash: str = Field(max_length=64)
    email_hash_key: int = Field(default=0, sa_type=SmallInteger)  # which key made the hash
    channel: str = Field(max_length=10)  # email | phone | all
    source: str = Field(max_length=30)
    reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = timestamp_field()
