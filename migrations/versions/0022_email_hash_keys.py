"""E-mail hash keys that rotate: the id of the key that made each stored hash, beside it.

Every hash stored so far was made with the root secret, key 0 (app.core.crypto): the
column's default says so, and adding a column with a constant default rewrites nothing.

Revision ID: 0022
Revises: 0019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("subjects", "marketing_optouts", "rights_requests")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table,
            sa.Column("email_hash_key", sa.SmallInteger(), nullable=False, server_default="0"),
        )


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "email_hash_key")
