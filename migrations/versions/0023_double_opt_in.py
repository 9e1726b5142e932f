"""Double opt-in and the e-mail outbox.

`double_opt_ins`: a consent asked for by e-mail (`confirm_by_email`), pending until the
person confirms it through the signed `/c/` link; its id becomes the consent event's id on
confirmation. Once expired only a hashed record stays (address hash, purpose, times): the
subject and the requested event are blanked.

`email_outbox`: every message the service sends, queued in the transaction that decided to
send it and sent by a background task (so an answer never waits for SMTP, and a restart
loses nothing). No address and no link are stored: the sender reads the subject's current
address and signs the link when it sends.

Revision ID: 0023
Revises: 0022
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "double_opt_ins",
        sa.Column("id", pg.UUID(), primary_key=True),
        sa.Column("subject_id", pg.UUID(), sa.ForeignKey("subjects.id"), nullable=True),
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("email_hash_key", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("purpose", sa.String(63), sa.ForeignKey("purposes.key"), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),  # pending | confirmed | expired
        # The event asked for (method, policy, notice, evidence, the recording key): blanked
        # on expiry.
        sa.Column("request", pg.JSONB(), nullable=True),
        # The attempt created the subject (a web form's prospect): erased on expiry unless
        # something else about them was recorded since.
        sa.Column("created_subject", sa.Boolean(), nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("confirmed_at", TS, nullable=True),
        sa.Column("confirmed_user_agent", sa.String(1000), nullable=True),
        sa.Column("confirmed_ip_hash", sa.String(64), nullable=True),
        sa.Column("expired_at", TS, nullable=True),
        sa.CheckConstraint("state IN ('pending', 'confirmed', 'expired')", name="doi_state"),
    )
    # The repeat check (same address and purpose, still pending) and the expiry sweep.
    op.create_index(
        "ix_double_opt_ins_pending",
        "double_opt_ins",
        ["email_hash", "purpose"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_double_opt_ins_expiry",
        "double_opt_ins",
        ["expires_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "email_outbox",
        sa.Column("id", pg.UUID(), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),  # double_opt_in | rights_request
        sa.Column("ref", pg.UUID(), nullable=False),  # the double opt-in or the request
        sa.Column("subject_id", pg.UUID(), sa.ForeignKey("subjects.id"), nullable=True),
        sa.Column("state", sa.String(10), nullable=False),  # pending | sent | cancelled
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_try_at", TS, nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.UniqueConstraint("kind", "ref", name="uq_email_outbox_kind_ref"),
        sa.CheckConstraint("state IN ('pending', 'sent', 'cancelled')", name="email_state"),
    )
    op.create_index(
        "ix_email_outbox_due",
        "email_outbox",
        ["next_try_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("email_outbox")
    op.drop_table("double_opt_ins")
