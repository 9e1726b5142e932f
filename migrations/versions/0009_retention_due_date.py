"""Retention (§7): one SQL function for the date a subject's data falls due for erasure,
used by the decision gate's `retention_expired` rule and by the retention sweep alike.

Revision ID: 0009
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Month arithmetic runs on the UK calendar (the controller's): a contract that ends on
# 31 August 2020 (stored as 1 September 00:00 UK) falls due on 1 September 2026, and
# 29 February 2020 + 6 years clamps to 28 February 2026, as PostgreSQL clamps month ends.
# NULL means "not due on any date yet" (a running contract, interest not ceased).
# A single SQL expression, IMMUTABLE: the planner inlines it into the calling query.
RETENTION_DUE_AT = """
CREATE OR REPLACE FUNCTION retention_due_at(
  rule text, months integer, created_at timestamptz, interest_ceased_at timestamptz,
  last_contract_end timestamptz, contract_running boolean, grace_days integer
) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE rule
    WHEN 'contract_end_plus' THEN CASE WHEN NOT coalesce(contract_running, false) THEN
      (timezone('Europe/London', coalesce(last_contract_end, created_at))
        + make_interval(months => months)) AT TIME ZONE 'Europe/London' END
    WHEN 'interest_ceased' THEN
      (timezone('Europe/London', interest_ceased_at)
        + make_interval(days => coalesce(grace_days, 0))) AT TIME ZONE 'Europe/London'
    WHEN 'fixed_period' THEN
      (timezone('Europe/London', created_at)
        + make_interval(months => months)) AT TIME ZONE 'Europe/London'
  END
$$
"""


def upgrade() -> None:
    op.execute(RETENTION_DUE_AT)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION retention_due_at(text, integer, timestamptz, timestamptz, timestamptz,"
        " boolean, integer)"
    )
