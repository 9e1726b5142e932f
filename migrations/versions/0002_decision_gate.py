"""The decision gate: lawful bases and their history, current-state tables (consent,
objections, opt-outs), stored decisions, and the e-mail HMAC on subjects.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 16:39:46.121708
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requester_key_id", sa.Uuid(), nullable=True),
        sa.Column("requester_name", sa.String(length=100), nullable=False),
        sa.Column("requester_role", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("purpose", sa.String(length=63), nullable=False),
        sa.Column("recipient", sa.String(length=63), nullable=True),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("basis", sa.String(length=30), nullable=True),
        sa.Column("reasons", postgresql.ARRAY(sa.String()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_index(
        "ix_decisions_subject_at", "decisions", ["subject_id", "decided_at"], unique=False
    )
    op.create_table(
        "marketing_optouts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketing_optouts")),
    )
    op.create_index(
        "uq_marketing_optouts_email_channel",
        "marketing_optouts",
        ["email_hash", "channel"],
        unique=True,
    )
    op.create_table(
        "consent_state",
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=63), nullable=False),
        sa.Column("recipient", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["purpose"], ["purposes.key"], name=op.f("fk_consent_state_purpose_purposes")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_consent_state_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint(
            "subject_id", "purpose", "recipient", name=op.f("pk_consent_state")
        ),
    )
    op.create_table(
        "lawful_bases",
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=63), nullable=False),
        sa.Column("basis", sa.String(length=30), nullable=False),
        sa.Column("contract_ref", sa.String(length=200), nullable=True),
        sa.Column("contract_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("contract_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lia_ref", sa.String(length=200), nullable=True),
        sa.Column("obligation", sa.String(length=500), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("set_by", sa.String(length=100), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["purpose"], ["purposes.key"], name=op.f("fk_lawful_bases_purpose_purposes")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_lawful_bases_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("subject_id", "purpose", name=op.f("pk_lawful_bases")),
    )
    op.create_index(
        "ix_lawful_bases_contracts",
        "lawful_bases",
        ["subject_id", "basis", "contract_end"],
        unique=False,
    )
    op.create_table(
        "lawful_basis_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=63), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("previous", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name=op.f("fk_lawful_basis_history_subject_id_subjects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lawful_basis_history")),
    )
    op.create_index(
        "ix_lawful_basis_history_subject",
        "lawful_basis_history",
        ["subject_id", "purpose", "id"],
        unique=False,
    )
    op.create_table(
        "objections",
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("objected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["purpose"], ["purposes.key"], name=op.f("fk_objections_purpose_purposes")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_objections_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("subject_id", "purpose", name=op.f("pk_objections")),
    )
    op.add_column("subjects", sa.Column("email_hash", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_subjects_email_hash"), "subjects", ["email_hash"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_subjects_email_hash"), table_name="subjects")
    op.drop_column("subjects", "email_hash")
    op.drop_table("objections")
    op.drop_index("ix_lawful_basis_history_subject", table_name="lawful_basis_history")
    op.drop_table("lawful_basis_history")
    op.drop_index("ix_lawful_bases_contracts", table_name="lawful_bases")
    op.drop_table("lawful_bases")
    op.drop_table("consent_state")
    op.drop_index("uq_marketing_optouts_email_channel", table_name="marketing_optouts")
    op.drop_table("marketing_optouts")
    op.drop_index("ix_decisions_subject_at", table_name="decisions")
    op.drop_table("decisions")
