"""The consent ledger (§9, Art 7): append-only events, the notices shown, and receipts."""

import uuid
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import ConfigDict, model_validator
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.models.base import Timestamp, timestamp_field
from app.models.catalogue import KEY_PATTERN
from app.models.subject import Email
from app.models.text import SafeLine, SafeLines

ConsentAction = Literal["given", "withdrawn"]
ConsentMethod = Literal["web_form", "email", "phone", "in_person", "import", "gpc"]
# Also written by the service itself: `rights_request` when it fulfils a withdraw_consent
# request, `unspecified` for a withdrawal sent without a method (Art 7(3): a withdrawal
# needs nothing beyond the subject, purpose and action).
RecordedMethod = Literal[
    "web_form", "email", "phone", "in_person", "import", "gpc", "rights_request", "unspecified"
]
UNSPECIFIED_METHOD = "unspecified"
METHOD_DESCRIPTION = (
    "How the choice was expressed. Required when consent is given. A withdrawal may omit it "
    "(Art 7(3): withdrawing is as easy as giving); it is then recorded as `unspecified`, and "
    "the recording key and its role stay in `recorded_by` and the audit log. `gpc` (Global "
    "Privacy Control) records a withdrawal of any purpose, never a consent given."
)
GPC_PURPOSE = "partner_referral"  # GPC: do not share with third parties (§6)


class ConsentNotice(SQLModel, table=True):
    """The exact wording shown, stored once and referenced by its SHA-256."""

    __tablename__ = "consent_notices"

    sha256: str = Field(primary_key=True, max_length=64)
    text: str | None = None  # nulled never: notices are the controller's, not personal data


class ConsentEvent(SQLModel, table=True):
    """Never updated or deleted by the API; erasure nulls only the evidence fields."""

    __tablename__ = "consent_events"
    __table_args__ = (Index("ix_consent_events_subject", "subject_id", "occurred_at"),)

    id: uuid.UUID = Field(primary_key=True)
    subject_id: uuid.UUID = Field(foreign_key="subjects.id")
    purpose: str = Field(foreign_key="purposes.key", max_length=63)
    recipient: str | None = Field(default=None, foreign_key="recipients.key", max_length=63)
    action: str = Field(max_length=10)
    method: str = Field(max_length=20)
    policy_version: str | None = Field(default=None, max_length=50)
    notice_sha256: str | None = Field(
        default=None, foreign_key="consent_notices.sha256", max_length=64
    )
    form_id: str | None = Field(default=None, max_length=200)
    page_url: str | None = Field(default=None, max_length=2000)
    user_agent: str | None = Field(default=None, max_length=1000)
    occurred_at: datetime = timestamp_field()
    recorded_at: datetime = timestamp_field()
    recorded_by_key_id: uuid.UUID | None = None
    recorded_by: str = Field(max_length=100)
    # Set when a GPC signal overrode an explicit choice (the more protective one wins).
    conflict: str | None = Field(default=None, max_length=200)


class Evidence(SQLModel):
    """Evidence as stored and answered (events recorded before the checks below included)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    form_id: str | None = Field(default=None, max_length=200)
    page_url: str | None = Field(default=None, max_length=2000)
    user_agent: str | None = Field(default=None, max_length=1000)


class EvidenceCreate(Evidence):
    """Evidence as recorded: single lines without control, bidi or invisible characters
    (app.models.text), refused with a 422 like names."""

    form_id: SafeLine | None = Field(default=None, max_length=200)
    page_url: SafeLine | None = Field(default=None, max_length=2000)
    user_agent: SafeLine | None = Field(default=None, max_length=1000)


class ConsentEventCreate(SQLModel):
    """Give exactly one of `subject_id` or `email`. `recipient` goes with, and only with,
    purpose `international_transfer`. Giving consent needs `policy_version` and
    `notice_text`; `purpose` and `recipient` are keys of `GET /v1/purposes` and
    `GET /v1/recipients`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # type: ignore[assignment]

    subject_id: uuid.UUID | None = None
    email: Email | None = None
    purpose: str = Field(max_length=63, regex=KEY_PATTERN)
    action: ConsentAction
    recipient: str | None = Field(default=None, max_length=63, regex=KEY_PATTERN)
    method: ConsentMethod | None = Field(default=None, description=METHOD_DESCRIPTION)
    policy_version: str | None = Field(default=None, max_length=50)
    # Prose of several paragraphs: newlines (LF) are kept, CR and other controls refused.
    notice_text: SafeLines | None = Field(default=None, min_length=1, max_length=20000)
    evidence: EvidenceCreate | None = None
    occurred_at: Timestamp | None = None
    confirm_by_email: bool = Field(
        default=False,
        description="Double opt-in: answer 202 with a pending event and e-mail the person a "
        "signed link; only their confirmation makes it a consent. Only with `given`. A repeat "
        "for the same address and purpose while one is pending sends no second e-mail.",
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if (self.subject_id is None) == (self.email is None):
            raise ValueError("give exactly one of `subject_id` or `email`")
        if self.confirm_by_email and self.action != "given":
            raise ValueError("`confirm_by_email` goes only with `given`")
        if (self.recipient is not None) != (self.purpose == "international_transfer"):
            raise ValueError("`recipient` goes with, and only with, `international_transfer`")
        if self.action == "given" and (
            self.method is None or not self.policy_version or not self.notice_text
        ):
            raise ValueError("giving consent needs `method`, `policy_version` and `notice_text`")
        if self.method == "gpc" and self.action != "withdrawn":
            raise ValueError("method `gpc` records only a withdrawal")
        return self


class Confirmation(SQLModel):
    """How a double opt-in was confirmed: from the signed link sent to the address."""

    confirmed_at: datetime
    user_agent: str | None = Field(description="the confirming request's User-Agent")
    ip_hash: str | None = Field(
        description="a keyed hash of the confirming request's address (never the address)"
    )


class ConsentEventPublic(SQLModel):
    id: uuid.UUID
    subject_id: uuid.UUID
    purpose: str
    recipient: str | None
    action: ConsentAction
    method: RecordedMethod = Field(description=METHOD_DESCRIPTION)
    policy_version: str | None
    notice_sha256: str | None
    evidence: Evidence
    occurred_at: datetime
    recorded_at: datetime
    recorded_by: str
    conflict: str | None
    confirmation: Confirmation | None = Field(
        default=None, description="double opt-in only: the e-mail confirmation"
    )


class ConsentEventCreated(ConsentEventPublic):
    receipt: dict[str, Any]
    # Further events this request caused (a GPC signal's withdrawal of partner_referral).
    also_recorded: list[ConsentEventPublic] = Field(default_factory=list)


class ConsentEventPending(SQLModel):
    """A double opt-in waiting for the person: no consent until confirmed. Its id becomes
    the consent event's id on confirmation."""

    id: uuid.UUID
    subject_id: uuid.UUID
    purpose: str
    recipient: str | None
    action: ConsentAction
    method: RecordedMethod
    policy_version: str | None
    status: Literal["pending"] = "pending"
    requested_at: datetime
    confirm_by: datetime = Field(description="When the link expires unconfirmed.")
    email_sent: bool = Field(
        description="False when this repeats a request still pending for the same address "
        "and purpose: no second e-mail is sent."
    )
    also_recorded: list[ConsentEventPublic] = Field(default_factory=list)


class ConsentStatePublic(SQLModel):
    purpose: str
    recipient: str | None
    status: ConsentAction
    event_id: uuid.UUID | None
    occurred_at: datetime


class RefreshItem(SQLModel):
    """A consent that runs out soon under its purpose's `consent_valid_months`: the CRM asks
    the person again (a fresh `given` starts a new period)."""

    subject_id: uuid.UUID
    email: str | None
    purpose: str
    event_id: uuid.UUID | None = Field(description="The consent event now in force.")
    given_at: datetime = Field(description="When the consent in force was given.")
    expires_at: datetime = Field(
        description="When it runs out: from then on decisions deny `consent_expired`."
    )
    restricted: bool = Field(description="Processing restricted (Art 18): do not contact.")
    marketing_opt_out: bool = Field(
        description="Opted out of direct marketing: a request for consent by e-mail is "
        "itself marketing, so do not send one."
    )


class ReconsentItem(SQLModel):
    """A subject whose consent rests on a policy version that a later one replaced for
    this purpose (`reconsent_purposes`): the CRM asks them again."""

    subject_id: uuid.UUID
    email: str | None
    purpose: str
    recipient: str | None = Field(description="Set for a transfer consent (per recipient).")
    policy_version: str | None = Field(description="The version they consented under.")
    consented_at: datetime
    asked_by_version: str = Field(
        description="The newest version in force that asks for this purpose again."
    )
    restricted: bool = Field(description="Processing restricted (Art 18): do not contact.")
    marketing_opt_out: bool = Field(
        description="Opted out of direct marketing: a request for consent by e-mail is "
        "itself marketing, so do not send one."
    )
