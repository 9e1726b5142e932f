"""Re-consent reaches sync: when a policy version that asks for consent again has taken
effect, the change-feed sequencer writes a `consent.outdated` entry for every consent it
made outdated, once (`reconsent_fed_at` records that it did).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "policies", sa.Column("reconsent_fed_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("policies", "reconsent_fed_at")
