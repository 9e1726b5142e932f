"""Sync with MailChimp and SurveyMonkey: the worker's state per target, what each target
holds of ours, and the events MailChimp's webhook delivers."""

import uuid
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, Column
from sqlalchemy.dialects.postgresql import JSONB
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
    reconciled_at: datetime | None = timestamp_field(default=None, nullable=True)
    reconcile_summary: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSONB, nullable=True)
    )


class SyncMember(SQLModel, table=True):
    """A subject a target holds because we pushed it, under the target's own key (MailChimp's
    subscriber hash, SurveyMonkey's contact id): how an erasure still reaches it."""

    __tablename__ = "sync_members"

    target: str = Field(primary_key=True, max_length=200)
    subject_id: uuid.UUID = Field(primary_key=True)
    remote_id: str = Field(max_length=64)
    remote_status: str = Field(default="subscribed", max_length=20)
    synced_at: datetime = timestamp_field()


OutboxAction = Literal[
    "upsert", "change_address", "unsubscribe", "delete_permanent", "delete_contact"
]
OutboxState = Literal["pending", "done", "given_up"]
REMOVING: frozenset[str] = frozenset({"unsubscribe", "delete_permanent", "delete_contact"})


class SyncOutbox(SQLModel, table=True):
    """The newest call for one member of a target: the intent (written before the call),
    its attempts and its outcome. `remote_id` is the target's own key (MailChimp's
    subscriber hash, SurveyMonkey's contact id), needed to make the call again; it is
    never shown or logged (`email_hash`, the service's keyed hash, names the member).
    `created_at` is when the newest intent was written; `remote_changed_at` is MailChimp's
    `last_changed` after a call of ours that set the member's status (NULL if it changed
    nothing: the status was set before, by someone else)."""

    __tablename__ = "sync_outbox"

    target: str = Field(primary_key=True, max_length=200)
    remote_id: str = Field(primary_key=True, max_length=64)
    subject_id: uuid.UUID | None = None
    email_hash: str | None = Field(default=None, max_length=64)
    action: str = Field(max_length=30)
    removes: bool
    state: str = Field(max_length=12)
    attempts: int = 0
    last_status: int | None = None
    last_title: str | None = Field(default=None, max_length=100)
    given_up_reason: str | None = Field(default=None, max_length=200)
    next_try_at: datetime = timestamp_field()
    remote_changed_at: datetime | None = timestamp_field(default=None, nullable=True)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class SyncFailurePublic(SQLModel):
    """A call MailChimp or SurveyMonkey refused: waiting for its next try, or given up."""

    target: str
    subject_id: uuid.UUID | None
    member: str | None = Field(
        description="the service's keyed hash of the address (never the address)"
    )
    action: OutboxAction
    state: Literal["waiting", "given_up"]
    last_status: int | None
    last_title: str | None
    attempts: int
    next_try_at: datetime | None = Field(description="waiting only")
    given_up_reason: str | None = Field(description="given up only: why it never will succeed")
    updated_at: datetime


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
