"""Bulk import batches; monthly range partitions of decisions and audit_entries (existing
rows kept), their maintenance function, and the record of exported, detached partitions.

Revision ID: 0012
Revises: 0004
Create Date: 2026-11-25 06:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Creates the month's partition of `parent` (partitioned by range on `key`) unless it
# exists; rows of that month already in the default partition are moved into it first
# (PostgreSQL refuses a new partition while the default holds rows of its range).
ENSURE_MONTH = """
CREATE OR REPLACE FUNCTION consent_ensure_month_partition(parent text, key text, month date)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  part text := parent || '_' || to_char(month, 'YYYY_MM');
  lo timestamptz := month::timestamp AT TIME ZONE 'UTC';
  hi timestamptz := (month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
  moved boolean;
BEGIN
  IF to_regclass(quote_ident(part)) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                 parent || '_default', key, key) INTO moved USING lo, hi;
  IF moved THEN
    EXECUTE format('CREATE TEMP TABLE consent_moving ON COMMIT DROP AS
                    WITH m AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *)
                    SELECT * FROM m', parent || '_default', key, key) USING lo, hi;
  END IF;
  EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                 part, parent, lo, hi);
  IF moved THEN
    EXECUTE format('INSERT INTO %I OVERRIDING SYSTEM VALUE SELECT * FROM consent_moving',
                   part);
    DROP TABLE consent_moving;
  END IF;
  RETURN true;
END $$;
"""
# This month and `months_ahead` more, for both tables: run by the background task (one
# worker at a time, advisory lock) and by `consent-api partitions maintain`.
ENSURE_AHEAD = """
CREATE OR REPLACE FUNCTION consent_ensure_partitions(months_ahead int DEFAULT 3)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  created int := 0;
  m date;
BEGIN
  FOR i IN 0..months_ahead LOOP
    m := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
    created := created + consent_ensure_month_partition('decisions', 'decided_at', m)::int
                       + consent_ensure_month_partition('audit_entries', 'at', m)::int;
  END LOOP;
  RETURN created;
END $$;
"""

DECISIONS = """
ALTER TABLE decisions RENAME TO decisions_unpartitioned;
ALTER TABLE decisions_unpartitioned RENAME CONSTRAINT pk_decisions TO pk_decisions_unpartitioned;
ALTER INDEX ix_decisions_subject_at RENAME TO ix_decisions_unpartitioned_subject_at;
CREATE TABLE decisions (
  LIKE decisions_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
  CONSTRAINT pk_decisions PRIMARY KEY (id, decided_at)
) PARTITION BY RANGE (decided_at);
CREATE INDEX ix_decisions_subject_at ON decisions (subject_id, decided_at);
CREATE TABLE decisions_default PARTITION OF decisions DEFAULT
"""
AUDIT = """
ALTER TABLE audit_entries RENAME TO audit_entries_unpartitioned;
ALTER TABLE audit_entries_unpartitioned
  RENAME CONSTRAINT pk_audit_entries TO pk_audit_entries_unpartitioned;
ALTER TABLE audit_entries_unpartitioned
  RENAME CONSTRAINT uq_audit_entries_position TO uq_audit_entries_unpartitioned_position;
ALTER INDEX ix_audit_entries_unsealed RENAME TO ix_audit_entries_unpartitioned_unsealed;
CREATE TABLE audit_entries (
  LIKE audit_entries_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY,
  CONSTRAINT pk_audit_entries PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
-- A unique index must include the partition key: one position per entry is kept by the
-- single sealer (advisory lock) and checked by verification, which needs 1..n in order.
CREATE INDEX ix_audit_entries_position ON audit_entries (position);
CREATE INDEX ix_audit_entries_unsealed ON audit_entries (id) WHERE position IS NULL;
CREATE TABLE audit_entries_default PARTITION OF audit_entries DEFAULT
"""
MONTHS_OF_EXISTING_ROWS = """
DO $$
DECLARE m date;
BEGIN
  FOR m IN
    SELECT DISTINCT date_trunc('month', decided_at AT TIME ZONE 'UTC')::date
    FROM decisions_unpartitioned
    UNION SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC')::date
    FROM audit_entries_unpartitioned
  LOOP
    PERFORM consent_ensure_month_partition('decisions', 'decided_at', m);
    PERFORM consent_ensure_month_partition('audit_entries', 'at', m);
  END LOOP;
END $$
"""
COPY_ROWS = """
SELECT consent_ensure_partitions(3);
INSERT INTO decisions SELECT * FROM decisions_unpartitioned;
INSERT INTO audit_entries OVERRIDING SYSTEM VALUE SELECT * FROM audit_entries_unpartitioned;
SELECT setval(pg_get_serial_sequence('audit_entries', 'id'),
              coalesce((SELECT max(id) FROM audit_entries_unpartitioned), 0) + 1, false);
DROP TABLE decisions_unpartitioned;
DROP TABLE audit_entries_unpartitioned
"""

NEW_TABLES = """
CREATE TABLE import_batches (
  sha256 varchar(64) PRIMARY KEY,
  input_sha256 varchar(64) NOT NULL,
  batch integer NOT NULL,
  rows integer NOT NULL,
  committed_at timestamptz NOT NULL
);
CREATE TABLE partition_archives (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  parent varchar(63) NOT NULL,
  partition varchar(63) NOT NULL UNIQUE,
  month date NOT NULL,
  path varchar(1000) NOT NULL,
  sha256 varchar(64) NOT NULL,
  rows bigint NOT NULL,
  first_position bigint,
  last_position bigint,
  archived_at timestamptz NOT NULL
)
"""


def _run(sql: str) -> None:
    for statement in sql.split(";\n"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _run(NEW_TABLES)
    op.execute(ENSURE_MONTH)
    op.execute(ENSURE_AHEAD)
    _run(DECISIONS)
    _run(AUDIT)
    op.execute(MONTHS_OF_EXISTING_ROWS)
    _run(COPY_ROWS)


def downgrade() -> None:
    # Back to plain tables, keeping every attached row (detached months stay archived).
    _run("""
CREATE TABLE decisions_flat (LIKE decisions INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO decisions_flat SELECT * FROM decisions;
DROP TABLE decisions;
ALTER TABLE decisions_flat RENAME TO decisions;
ALTER TABLE decisions ADD CONSTRAINT pk_decisions PRIMARY KEY (id);
CREATE INDEX ix_decisions_subject_at ON decisions (subject_id, decided_at);
CREATE TABLE audit_flat (LIKE audit_entries INCLUDING DEFAULTS INCLUDING IDENTITY);
INSERT INTO audit_flat OVERRIDING SYSTEM VALUE SELECT * FROM audit_entries;
SELECT setval(pg_get_serial_sequence('audit_flat', 'id'),
              coalesce((SELECT max(id) FROM audit_flat), 0) + 1, false);
DROP TABLE audit_entries;
ALTER TABLE audit_flat RENAME TO audit_entries;
ALTER TABLE audit_entries ADD CONSTRAINT pk_audit_entries PRIMARY KEY (id);
ALTER TABLE audit_entries ADD CONSTRAINT uq_audit_entries_position UNIQUE (position);
CREATE INDEX ix_audit_entries_unsealed ON audit_entries (id) WHERE position IS NULL;
DROP FUNCTION consent_ensure_partitions(int);
DROP FUNCTION consent_ensure_month_partition(text, text, date);
DROP TABLE partition_archives;
DROP TABLE import_batches
""")
