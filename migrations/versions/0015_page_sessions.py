"""The auditor pages' sessions, server-side: a row per session (opened by the login form or
a `consent-api report-link` link), holding SHA-256 hashes of its cookie's token and of the
link that opened it, never a token. A cookie is honoured only while its row is live:
logout and `consent-api page-sessions revoke` end it, and a revoked link's row refuses the
link. Tokens signed before this revision (with the retired key) no longer verify: whoever
was signed in signs in again.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "page_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("opened", sa.String(length=10), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("link_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=10), nullable=True),
        sa.CheckConstraint("opened IN ('login', 'link')", name=op.f("ck_page_sessions_opened")),
        sa.CheckConstraint(
            "(opened = 'login' AND api_key_id IS NOT NULL AND link_hash IS NULL)"
            " OR (opened = 'link' AND api_key_id IS NULL AND link_hash IS NOT NULL)",
            name=op.f("ck_page_sessions_opened_with"),
        ),
        sa.CheckConstraint(
            "ended_by IN ('logout', 'revoke')", name=op.f("ck_page_sessions_ended_by")
        ),
        sa.CheckConstraint(
            "(ended_at IS NULL) = (ended_by IS NULL)", name=op.f("ck_page_sessions_ended")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_page_sessions_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_page_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_page_sessions_token_hash")),
    )
    op.create_index(
        "ix_page_sessions_link_hash",
        "page_sessions",
        ["link_hash"],
        postgresql_where=sa.text("link_hash IS NOT NULL"),
    )
    op.create_index("ix_page_sessions_expires_at", "page_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("page_sessions")
