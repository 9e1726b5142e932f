"""Issue 13: stop the clock on rights requests, re-consent on a policy change, and the
position that incremental consent exports resume from.

Revision ID: 0011
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Stop the clock: the running pause (if any) and the days of the ended ones.
    op.add_column(
        "rights_requests", sa.Column("paused_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("rights_requests", sa.Column("pause_reason", sa.String(30), nullable=True))
    op.add_column(
        "rights_requests",
        sa.Column("paused_days", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_index(
        "ix_rights_requests_paused",
        "rights_requests",
        ["paused_since"],
        postgresql_where=sa.text("paused_since IS NOT NULL"),
    )
    # Re-consent: the purposes whose earlier consents a policy version makes outdated.
    op.add_column(
        "policies",
        sa.Column(
            "reconsent_purposes",
            postgresql.ARRAY(sa.String()),
            server_default="{}",
            nullable=False,
        ),
    )
    # The writing transaction of each event: an export resumes after every transaction
    # older than the oldest one still running, so a late commit is never skipped.
    op.add_column(
        "consent_events",
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("pg_current_xact_id()::text::bigint"),
            nullable=False,
        ),
    )
    op.create_index("ix_consent_events_txid_id", "consent_events", ["txid", "id"])


def downgrade() -> None:
    op.drop_index("ix_consent_events_txid_id", table_name="consent_events")
    op.drop_column("consent_events", "txid")
    op.drop_column("policies", "reconsent_purposes")
    op.drop_index("ix_rights_requests_paused", table_name="rights_requests")
    op.drop_column("rights_requests", "paused_days")
    op.drop_column("rights_requests", "pause_reason")
    op.drop_column("rights_requests", "paused_since")
