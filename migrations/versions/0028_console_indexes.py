"""The privacy team's console: its lists read indexes, never the whole table.

- `ix_rights_requests_open_due`: the open requests, due first (keyset on due date and id),
  and their counts by state (status, paused, overdue) read from the index alone.
- `ix_subjects_name_prefix`: the search by the start of a name, among live subjects.
- page sessions opened from a console link (`key_link`): they name their API key (revoking
  it ends them) and their link (revoking one of them refuses the link).

Revision ID: 0028
Revises: 0027
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028"
# The newest revision on this branch; whoever merges the numbers in between re-points it.
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OPENED_WITH = (
    "(opened = 'login' AND api_key_id IS NOT NULL AND link_hash IS NULL)"
    " OR (opened = 'link' AND api_key_id IS NULL AND link_hash IS NOT NULL)"
)
KEY_LINK = " OR (opened = 'key_link' AND api_key_id IS NOT NULL AND link_hash IS NOT NULL)"


def _sessions_opened(kinds: str, opened_with: str) -> None:
    op.execute("ALTER TABLE page_sessions DROP CONSTRAINT ck_page_sessions_opened")
    op.execute("ALTER TABLE page_sessions DROP CONSTRAINT ck_page_sessions_opened_with")
    op.execute(
        f"ALTER TABLE page_sessions ADD CONSTRAINT ck_page_sessions_opened CHECK (opened IN ({kinds}))"
    )
    op.execute(
        "ALTER TABLE page_sessions ADD CONSTRAINT ck_page_sessions_opened_with "
        f"CHECK ({opened_with})"
    )


def upgrade() -> None:
    _sessions_opened("'login', 'link', 'key_link'", OPENED_WITH + KEY_LINK)
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_rights_requests_open_due ON rights_requests "
        "(due_at, id) INCLUDE (status, paused_since, type) "
        "WHERE status IN ('received', 'identity_verified')"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_subjects_name_prefix ON subjects "
        "(lower(name) text_pattern_ops, id) WHERE erased_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DELETE FROM page_sessions WHERE opened = 'key_link'")
    _sessions_opened("'login', 'link'", OPENED_WITH)
    op.execute("DROP INDEX IF EXISTS ix_subjects_name_prefix")
    op.execute("DROP INDEX IF EXISTS ix_rights_requests_open_due")
