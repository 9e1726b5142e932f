"""The audit chain records a statement, not a row: where the new form starts.

From here a statement that stores many decisions (a batch, an audience chunk, a push by
ids) appends one audit entry, `decision.statement`, holding the count, the id range and a
SHA-256 of its decision rows (app.services.audit.statements). Entries before keep their
meaning, one `decision.create` per decision row; a single decision still writes one. The
row below records the first audit entry id the new form may have: verification refuses an
entry of the form before it.

Revision ID: 0025
Revises: 0024
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# nextval: ids are handed out by the sequence, so every entry written before this migration
# has a smaller id, whatever was in flight; the one id taken here is a gap, as a rolled-back
# writer leaves.
UPGRADE = (
    """CREATE TABLE audit_forms (
      form text PRIMARY KEY,
      from_entry_id bigint NOT NULL,
      began_at timestamptz NOT NULL DEFAULT now()
    )""",
    """INSERT INTO audit_forms (form, from_entry_id)
    VALUES ('decision.statement', nextval(pg_get_serial_sequence('audit_entries', 'id')))""",
)


def upgrade() -> None:
    for statement in UPGRADE:  # the driver runs one command at a time
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE audit_forms")
