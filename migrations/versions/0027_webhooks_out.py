"""Webhooks out: endpoints (secrets encrypted) and their deliveries (the outbox the change
feed's sequencer writes in the statement that numbers the entries).

Revision ID: 0027
Revises: 0026
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027"
# The newest revision on this branch; whoever merges the numbers in between re-points it.
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE webhook_endpoints (
  key varchar(63) PRIMARY KEY,
  url text NOT NULL,
  kinds text[] NOT NULL,
  description varchar(500),
  secret_enc bytea NOT NULL,
  previous_secret_enc bytea,
  previous_secret_until timestamptz,
  disabled_at timestamptz,
  disabled_reason varchar(200),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
)""")
    op.execute("""
CREATE TABLE webhook_deliveries (
  id uuid PRIMARY KEY,
  endpoint_key varchar(63) NOT NULL
    REFERENCES webhook_endpoints (key) ON DELETE CASCADE,
  seq bigint NOT NULL,
  kind varchar(40) NOT NULL,
  subject_id uuid,
  status varchar(20) NOT NULL DEFAULT 'pending',
  attempts integer NOT NULL DEFAULT 0,
  last_status integer,
  last_error varchar(200),
  next_try_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  delivered_at timestamptz,
  CONSTRAINT uq_webhook_deliveries_endpoint_seq UNIQUE (endpoint_key, seq)
)""")
    # The worker's walk: pending deliveries of an endpoint in feed order, and the check
    # that no earlier one of the same subject still waits.
    op.execute(
        "CREATE INDEX ix_webhook_deliveries_pending ON webhook_deliveries (endpoint_key, seq)"
        " WHERE status = 'pending'"
    )
    op.execute(
        "CREATE INDEX ix_webhook_deliveries_subject ON webhook_deliveries"
        " (endpoint_key, subject_id, seq) WHERE status = 'pending'"
    )
    op.execute(
        "CREATE INDEX ix_webhook_deliveries_failed ON webhook_deliveries (endpoint_key)"
        " WHERE status = 'failed'"
    )


def downgrade() -> None:
    op.execute("DROP TABLE webhook_deliveries")
    op.execute("DROP TABLE webhook_endpoints")
