"""The sync's outbox: every call to MailChimp or SurveyMonkey as an intent, its attempts and its outcome.

One row per (target, remote member): the newest intent for a member replaces the one before
(a later upsert supersedes a waiting unsubscribe, and the other way round). A call that
takes someone off a list stays `pending` until it is done; one that adds someone may be
`given_up` with MailChimp's reason. `sync_state` gains the last reconciliation.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sync_outbox",
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("remote_id", sa.String(64), primary_key=True),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("email_hash", sa.String(64), nullable=True),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("removes", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_title", sa.String(100), nullable=True),
        sa.Column("given_up_reason", sa.String(200), nullable=True),
        _at("next_try_at", nullable=False),
        _at("remote_changed_at"),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'done', 'given_up')", name="sync_outbox_state_check"
        ),
        sa.CheckConstraint("NOT (removes AND state = 'given_up')", name="sync_outbox_removes"),
    )
    op.create_index(
        "sync_outbox_waiting",
        "sync_outbox",
        ["target", "next_try_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.add_column("sync_state", _at("reconciled_at"))
    op.add_column("sync_state", sa.Column("reconcile_summary", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("sync_state", "reconcile_summary")
    op.drop_column("sync_state", "reconciled_at")
    op.drop_index("sync_outbox_waiting", table_name="sync_outbox")
    op.drop_table("sync_outbox")
