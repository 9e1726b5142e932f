"""Marketing opt-outs (§10, Art 21(2)-(3), PECR): requests and answers."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from app.models.subject import Email
from app.models.text import SafeNote

Channel = Literal["email", "phone", "all"]
OptOutSource = Literal["website", "crm", "mailchimp", "surveymonkey", "rights_request", "gpc"]
# Also written by the service itself: `email_link` is the person's own one-click unsubscribe
# or preference page (issue 12); clients cannot claim it.
RecordedOptOutSource = Literal[
    "website", "crm", "mailchimp", "surveymonkey", "rights_request", "gpc", "email_link"
]


class OptOutCreate(SQLModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # type: ignore[assignment]

    email: Email
    channel: Channel = "all"
    source: OptOutSource
    reason: SafeNote | None = Field(default=None, max_length=500)


class OptOutPublic(SQLModel):
    """No e-mail here: the opt-out is kept only as a keyed hash. No reason either: it is
    free text another role may have written, and every caller may repeat an opt-out."""

    id: uuid.UUID
    channel: Channel
    source: RecordedOptOutSource = Field(
        description="Where it came from; `email_link` is the person's own one-click unsubscribe"
        " or preference page (written by the service only)."
    )
    created_at: datetime


class OptOutCheck(SQLModel):
    opted_out: bool
    channels: list[Channel]
