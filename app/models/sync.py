"""Sync with MailChimp and SurveyMonkey: the worker's state per target, what each target
holds of ours, and the events MailChimp's webhook delivers."""

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field


class SyncState(SQLModel, table=True):
    """Where a target's worker stands: advanced only after a batch's remote calls succeeded."""

    __tablename__ = "sync_state"

    target: str = Field(primary_key=True, max_length=200)
    feed_after: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    initial_done: bool = False
    audience_after: uuid.UUID | None = None
    readback_since: datetime | None = timestamp_field(default=None, nullable=True)
    updated_at: datetime = timestamp_field()


class SyncMember(SQLModel, table=True):
    """A subject a target holds because we pushed it, under the target's own key (MailChimp's
    subscriber hash, SurveyMonkey's contact id): how an erasure still reaches it."""

    __tablename__ = "sync_members"

    target: str = Field(primary_key=True, max_length=200)
    subject_id: uuid.UUID = Field(primary_key=True)
    remote_id: str = Field(max_length=64)
    remote_status: str = Field(default="subscribed", max_length=20)
    synced_at: datetime = timestamp_field()


MailchimpEventType = Literal["unsubscribe", "cleaned", "upemail"]


class MailchimpEvent(SQLModel, table=True):
    __tablename__ = "mailchimp_events"

    id: uuid.UUID = Field(primary_key=True)
    event_key: str = Field(max_length=64, unique=True)  # keyed hash of the whole payload
    type: str = Field(max_length=20)
    list_id: str | None = Field(default=None, max_length=64)
    subject_id: uuid.UUID | None = Field(default=None, index=True)
    email_hash: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=100)
    old_email: str | None = Field(default=None, max_length=254)
    new_email: str | None = Field(default=None, max_length=254)
    fired_at: datetime | None = timestamp_field(default=None, nullable=True)
    received_at: datetime = timestamp_field()


class MailchimpEventPublic(SQLModel):
    """What MailChimp told us about a subject: an unsubscribe (also an opt-out), a cleaned
    (bounced) address, or an address changed in MailChimp (`upemail`) that the CRM should
    review; MailChimp's change is not applied to the subject by itself."""

    id: uuid.UUID
    type: MailchimpEventType
    subject_id: uuid.UUID | None
    list_id: str | None
    reason: str | None
    old_email: str | None = Field(description="upemail only, while the subject is live")
    new_email: str | None = Field(description="upemail only, while the subject is live")
    fired_at: datetime | None
    received_at: datetime


class WebhookAnswer(SQLModel):
    type: str
    recorded: bool = Field(description="false for a replay and for types that change nothing")
