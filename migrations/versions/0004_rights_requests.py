"""Rights requests and their append-only transitions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 16:54:50.339830
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rights_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=30), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("email_hash", sa.String(length=64), nullable=True),
        sa.Column("details", sa.String(length=5000), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.Date(), nullable=False),
        sa.Column("extended_months", sa.Integer(), nullable=False),
        sa.Column("extension_reason", sa.String(length=2000), nullable=True),
        sa.Column("identity_method", sa.String(length=20), nullable=True),
        sa.Column("identity_note", sa.String(length=2000), nullable=True),
        sa.Column("rejection_code", sa.String(length=30), nullable=True),
        sa.Column("rejection_article", sa.String(length=50), nullable=True),
        sa.Column("rejection_reason", sa.String(length=2000), nullable=True),
        sa.Column("purposes", postgresql.ARRAY(sa.String()), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_rights_requests_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rights_requests")),
    )
    op.create_index(
        "ix_rights_requests_status_due", "rights_requests", ["status", "due_at"], unique=False
    )
    op.create_index("ix_rights_requests_subject", "rights_requests", ["subject_id"], unique=False)
    op.create_table(
        "rights_request_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["rights_requests.id"],
            name=op.f("fk_rights_request_events_request_id_rights_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rights_request_events")),
    )
    op.create_index(
        op.f("ix_rights_request_events_request_id"),
        "rights_request_events",
        ["request_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_rights_request_events_request_id"), table_name="rights_request_events")
    op.drop_table("rights_request_events")
    op.drop_index("ix_rights_requests_subject", table_name="rights_requests")
    op.drop_index("ix_rights_requests_status_due", table_name="rights_requests")
    op.drop_table("rights_requests")
