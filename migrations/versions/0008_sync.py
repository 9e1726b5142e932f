"""Sync: change-feed positions given by one sequencer, sync state per target, the members
each target holds, and MailChimp webhook events.

Revision ID: 0008
Revises: 0004
Create Date: 2026-11-25 06:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The insertion identity becomes `id`; `seq` is the feed position, given to committed
    # rows only, in commit order, by one sequencer at a time (an advisory lock).
    op.execute("ALTER TABLE changes RENAME COLUMN seq TO id")
    op.add_column("changes", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE changes SET seq = id")
    op.drop_column("changes", "txid")
    op.create_index("ux_changes_seq", "changes", ["seq"], unique=True)
    op.create_index(
        "ix_changes_unsequenced", "changes", ["id"], postgresql_where=sa.text("seq IS NULL")
    )
    op.create_table(
        "sync_state",
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("feed_after", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("initial_done", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("audience_after", sa.Uuid(), nullable=True),
        sa.Column("readback_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # What a target holds of ours: the subject and the remote key (MailChimp's subscriber
    # hash, SurveyMonkey's contact id), so that an erased subject can still be deleted there.
    op.create_table(
        "sync_members",
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("subject_id", sa.Uuid(), primary_key=True),
        sa.Column("remote_id", sa.String(64), nullable=False),
        # What we last made of it there: `subscribed`, or `unsubscribed` by us (so that
        # reading unsubscribes back does not mistake our own for the person's opt-out).
        sa.Column("remote_status", sa.String(20), nullable=False, server_default="subscribed"),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sync_members_remote", "sync_members", ["target", "remote_id"])
    op.create_table(
        "mailchimp_events",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("event_key", sa.String(64), nullable=False, unique=True),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("list_id", sa.String(64), nullable=True),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("email_hash", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(100), nullable=True),
        # Only for `upemail` on a live subject (the CRM must see the new address); erasure
        # removes them.
        sa.Column("old_email", sa.String(254), nullable=True),
        sa.Column("new_email", sa.String(254), nullable=True),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mailchimp_events_subject", "mailchimp_events", ["subject_id"])


def downgrade() -> None:
    op.drop_table("mailchimp_events")
    op.drop_table("sync_members")
    op.drop_table("sync_state")
    op.drop_index("ix_changes_unsequenced", table_name="changes")
    op.drop_index("ux_changes_seq", table_name="changes")
    op.add_column(
        "changes",
        sa.Column(
            "txid",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("pg_current_xact_id()::text::bigint"),
        ),
    )
    op.drop_column("changes", "seq")
    op.execute("ALTER TABLE changes RENAME COLUMN id TO seq")
