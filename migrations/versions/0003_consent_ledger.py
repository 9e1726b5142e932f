"""Consent ledger: events, notices, the change feed and idempotency keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 16:50:00.230625
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("email_hash", sa.String(length=64), nullable=True),
        sa.Column("purpose", sa.String(length=63), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("pg_current_xact_id()::text::bigint"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_changes")),
    )
    op.create_table(
        "consent_notices",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_consent_notices")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_key_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_key_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "consent_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=63), nullable=False),
        sa.Column("recipient", sa.String(length=63), nullable=True),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("policy_version", sa.String(length=50), nullable=True),
        sa.Column("notice_sha256", sa.String(length=64), nullable=True),
        sa.Column("form_id", sa.String(length=200), nullable=True),
        sa.Column("page_url", sa.String(length=2000), nullable=True),
        sa.Column("user_agent", sa.String(length=1000), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by_key_id", sa.Uuid(), nullable=True),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.Column("conflict", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["notice_sha256"],
            ["consent_notices.sha256"],
            name=op.f("fk_consent_events_notice_sha256_consent_notices"),
        ),
        sa.ForeignKeyConstraint(
            ["purpose"], ["purposes.key"], name=op.f("fk_consent_events_purpose_purposes")
        ),
        sa.ForeignKeyConstraint(
            ["recipient"], ["recipients.key"], name=op.f("fk_consent_events_recipient_recipients")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_consent_events_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_events")),
    )
    op.create_index(
        "ix_consent_events_subject", "consent_events", ["subject_id", "occurred_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_consent_events_subject", table_name="consent_events")
    op.drop_table("consent_events")
    op.drop_table("idempotency_keys")
    op.drop_table("consent_notices")
    op.drop_table("changes")
