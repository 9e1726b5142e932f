"""The same person held twice: a merged subject points at the one it was merged into.

Nothing stored is moved: the merged subject's events, decisions and requests keep its id,
and every read of the survivor follows `merged_into` back to them. The partial index serves
those reads (survivor -> merged ones) and stays empty for every subject never merged.

Revision ID: 0026
Revises: 0025
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "subjects",
        sa.Column("merged_into", sa.Uuid(), sa.ForeignKey("subjects.id"), nullable=True),
    )
    op.add_column("subjects", sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_subjects_merged_into",
        "subjects",
        ["merged_into"],
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    # Never a subject merged into itself (the service refuses it first, with a reason).
    op.create_check_constraint(
        "ck_subjects_not_merged_into_self", "subjects", "merged_into IS DISTINCT FROM id"
    )


def downgrade() -> None:
    op.drop_constraint("ck_subjects_not_merged_into_self", "subjects")
    op.drop_index("ix_subjects_merged_into", table_name="subjects")
    op.drop_column("subjects", "merged_at")
    op.drop_column("subjects", "merged_into")
