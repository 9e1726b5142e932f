"""Signed links to the person's own pages (unsubscribe and preferences)."""

from datetime import datetime

from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from app.models.catalogue import KEY_PATTERN

ONE_CLICK = "List-Unsubscribe=One-Click"


class LinkCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    purpose: str | None = Field(
        default=None,
        max_length=63,
        regex=KEY_PATTERN,
        description="The purpose the e-mail is sent for (shown to the person); optional.",
    )


class EmailHeaders(SQLModel):
    """The two header fields to put on the e-mail (RFC 8058 section 3.1); DKIM-sign both."""

    list_unsubscribe: str = Field(alias="List-Unsubscribe", description="`<https://.../u/TOKEN>`")
    list_unsubscribe_post: str = Field(
        default=ONE_CLICK, alias="List-Unsubscribe-Post", description=f"Always `{ONE_CLICK}`"
    )

    model_config = ConfigDict(populate_by_name=True)  # type: ignore[assignment]


class LinkPublic(SQLModel):
    unsubscribe_url: str = Field(description="One-click unsubscribe (POST) and its page (GET)")
    unsubscribe_expires_at: datetime
    preference_url: str | None = Field(
        default=None,
        description="The person's preference page; only for keys that may mint one (crm)",
    )
    preference_expires_at: datetime | None = None
    headers: EmailHeaders
