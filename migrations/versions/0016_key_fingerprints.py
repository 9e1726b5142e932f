"""What the database needs to recognise the keys its stored values were made with: a
fingerprint of the e-mail hash key (an HKDF derivation of it, from which the key cannot be
recovered). A service started with another CONSENT_SECRET_KEY would find no opt-out any
more; it refuses to start instead (app.services.access.key_fingerprints).

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_fingerprints",
        sa.Column("use", sa.Text(), primary_key=True),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
    )


def downgrade() -> None:
    op.drop_table("key_fingerprints")
