"""The console's catalogue previews: the subjects with a basis for one purpose, read from an
index (`ix_lawful_bases_purpose`) rather than by walking every subject's bases. A preview of
a purpose's or a recipient's change evaluates the gate over these subjects only
(app.services.catalogue.impact).

Revision ID: 0029
Revises: 0028
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0029"
# The newest revision on this branch; whoever merges the numbers in between re-points it.
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_lawful_bases_purpose ON lawful_bases (purpose, subject_id)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_lawful_bases_purpose")
