"""The auditor pages' sessions, server-side (app.services.access.page_sessions): a browser's cookie
is honoured only while its row says the session is live.

Only SHA-256 hashes of the tokens are stored, never a token: the session cookie's
(`token_hash`) and, for a session opened from a `consent-api report-link` link, the link's
(`link_hash`), so that revoking such a session refuses its link too.
"""

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, text
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_field, utcnow


class PageSession(SQLModel, table=True):
    __tablename__ = "page_sessions"
    __table_args__ = (
        CheckConstraint("opened IN ('login', 'link', 'key_link')", name="opened"),
        # A login names the API key it was opened with; a report link names its link (never
        # a key); a console link (`key_link`) names both: it stands for its key.
        CheckConstraint(
            "(opened = 'login' AND api_key_id IS NOT NULL AND link_hash IS NULL)"
            " OR (opened = 'link' AND api_key_id IS NULL AND link_hash IS NOT NULL)"
            " OR (opened = 'key_link' AND api_key_id IS NOT NULL AND link_hash IS NOT NULL)",
            name="opened_with",
        ),
        CheckConstraint("ended_by IN ('logout', 'revoke')", name="ended_by"),
        CheckConstraint("(ended_at IS NULL) = (ended_by IS NULL)", name="ended"),
        Index(
            "ix_page_sessions_link_hash",
            "link_hash",
            postgresql_where=text("link_hash IS NOT NULL"),
        ),
        Index("ix_page_sessions_expires_at", "expires_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    opened: str = Field(max_length=10)  # login | link | key_link
    role: str = Field(max_length=20)
    name: str = Field(max_length=100)
    api_key_id: uuid.UUID | None = Field(
        default=None, foreign_key="api_keys.id", ondelete="CASCADE"
    )
    link_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = timestamp_field(default_factory=utcnow)
    expires_at: datetime = timestamp_field()
    last_seen_at: datetime = timestamp_field(default_factory=utcnow)
    ended_at: datetime | None = timestamp_field(default=None, nullable=True)
    ended_by: str | None = Field(default=None, max_length=10)  # logout | revoke
