"""Webhooks out: the endpoints an admin registers and one delivery per (endpoint, feed entry).

A delivery is the outbox row of one POST: written by the change-feed sequencer in the same
statement that gives the entry its position (so a crash loses none), sent by the delivery
worker, and kept with its attempts and outcome."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, StringConstraints
from sqlalchemy import ARRAY, BigInteger, Column, LargeBinary, Text
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field

# Every kind the change feed carries (app.models.change.ChangePublic's description).
CHANGE_KINDS: tuple[str, ...] = (
    "subject.created",
    "subject.updated",
    "subject.restricted",
    "subject.unrestricted",
    "subject.rectified",
    "subject.erased",
    "subject.erased_in_part",
    "consent.given",
    "consent.withdrawn",
    "consent.outdated",
    "optout",
    "objection",
    "basis.set",
    "basis.ended",
    "contract.ended",
    "contract.started",
    "interest.ceased",
    "retention.due",
    "mailchimp.cleaned",
    "mailchimp.upemail",
)
DeliveryStatus = Literal["pending", "delivered", "failed"]
KindName = Annotated[str, StringConstraints(min_length=1, max_length=40)]


class WebhookEndpoint(SQLModel, table=True):
    """A receiver of the change feed. Its signing secret is stored encrypted (AES-256-GCM
    under a key derived from CONSENT_SECRET_KEY), never returned after it is made; after a
    rotation the previous one also signs until `previous_secret_until`."""

    __tablename__ = "webhook_endpoints"

    key: str = Field(primary_key=True, max_length=63)
    url: str = Field(sa_column=Column(Text, nullable=False))
    kinds: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    description: str | None = Field(default=None, max_length=500)
    secret_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    previous_secret_enc: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True)
    )
    previous_secret_until: datetime | None = timestamp_field(default=None, nullable=True)
    disabled_at: datetime | None = timestamp_field(default=None, nullable=True)
    disabled_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class WebhookDelivery(SQLModel, table=True):
    """One feed entry for one endpoint. `id` is the `webhook-id` (the same on every try);
    `status` pending until a 2xx (delivered) or until `expires_at` passes (failed)."""

    __tablename__ = "webhook_deliveries"

    id: uuid.UUID = Field(primary_key=True)
    endpoint_key: str = Field(
        foreign_key="webhook_endpoints.key", ondelete="CASCADE", max_length=63
    )
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    kind: str = Field(max_length=40)
    subject_id: uuid.UUID | None = None
    status: str = Field(default="pending", max_length=20)
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=200)
    next_try_at: datetime = timestamp_field()
    expires_at: datetime = timestamp_field()
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    delivered_at: datetime | None = timestamp_field(default=None, nullable=True)


class WebhookEndpointPut(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    url: str = Field(
        max_length=2000,
        description="Where the entries are POSTed: https:// (http:// in development only)",
    )
    kinds: list[KindName] = Field(
        min_length=1, max_length=len(CHANGE_KINDS), description="Change-feed kinds to send"
    )
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointPublic(SQLModel):
    key: str
    url: str
    kinds: list[str]
    description: str | None
    disabled_at: datetime | None = Field(
        description="Set when the receiver answered 410 Gone; a PUT enables it again"
    )
    disabled_reason: str | None
    previous_secret_until: datetime | None = Field(
        description="After a rotation: until when the previous secret also signs"
    )
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointPublic):
    secret: str | None = Field(
        description="The signing secret (`whsec_` + base64), shown only in this answer;"
        " null when a PUT changed an endpoint that already had one"
    )


class WebhookDeliveryPublic(SQLModel):
    id: uuid.UUID = Field(description="Sent as `webhook-id`; the same on every try")
    seq: int = Field(description="The feed entry's position")
    kind: str
    subject_id: uuid.UUID | None
    status: DeliveryStatus
    attempts: int
    last_status: int | None = Field(description="The receiver's last HTTP status, if any")
    last_error: str | None = Field(description="Why the last try failed, if it did")
    next_try_at: datetime | None = Field(description="Pending only: when it is tried next")
    expires_at: datetime = Field(description="Pending past this: failed")
    created_at: datetime
    delivered_at: datetime | None
