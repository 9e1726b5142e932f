"""Consent that expires: a purpose's `consent_valid_months` (null: a consent for it lasts
until withdrawn). The gate denies a consent older than that (`consent_expired`) and the
gate's clock keeps the instant it runs out (`consent.expired` in `gate_moments`).

Every purpose starts without a period, so no consent changes its answer and no moment is
due here. Two partial indexes: the clock's recomputation of one purpose's moments when an
admin changes its period, and the refresh report's range scan over given consents.

Revision ID: 0024
Revises: 0023
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("purposes", sa.Column("consent_valid_months", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_purposes_consent_valid_months"),
        "purposes",
        "consent_valid_months IS NULL OR consent_valid_months BETWEEN 1 AND 1200",
    )
    op.create_index(
        "ix_gate_moments_consent_expired",
        "gate_moments",
        ["purpose"],
        postgresql_where=sa.text("kind = 'consent.expired'"),
    )
    op.create_index(
        "ix_consent_state_given",
        "consent_state",
        ["purpose", "occurred_at"],
        postgresql_where=sa.text("status = 'given' AND recipient = ''"),
    )


def downgrade() -> None:
    op.drop_index("ix_consent_state_given", table_name="consent_state")
    op.drop_index("ix_gate_moments_consent_expired", table_name="gate_moments")
    op.execute("DELETE FROM gate_moments WHERE kind = 'consent.expired'")
    op.drop_constraint(op.f("ck_purposes_consent_valid_months"), "purposes", type_="check")
    op.drop_column("purposes", "consent_valid_months")
