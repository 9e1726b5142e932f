"""The gate's clock: the instants at which time alone changes a subject's answer.

One row per (subject, purpose or NULL, kind): a contract's end, a prospect's interest ceased
plus its grace, a retention due date, a contract's start still to come. The writes that
create such an instant keep its row (app/services/changes/clock.py); a background task feeds
one change-feed entry per row once `due_at` has passed and marks it `fed_at`. The partial
index is what that task reads. Existing subjects get their rows here (the same SQL as
`clock.py`'s, as of this migration): instants already passed are fed on the first run.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
INSERT INTO gate_moments (subject_id, purpose, kind, due_at)
SELECT lb.subject_id, lb.purpose, 'contract.ended', lb.contract_end
FROM lawful_bases lb JOIN subjects s ON s.id = lb.subject_id AND s.erased_at IS NULL
WHERE lb.basis = 'contract' AND lb.contract_end IS NOT NULL
UNION ALL
SELECT lb.subject_id, lb.purpose, 'contract.started', lb.contract_start
FROM lawful_bases lb JOIN subjects s ON s.id = lb.subject_id AND s.erased_at IS NULL
WHERE lb.basis = 'contract' AND lb.contract_start > now()
UNION ALL
SELECT s.id, NULL,
  CASE cat.retention_rule WHEN 'interest_ceased' THEN 'interest.ceased' ELSE 'retention.due' END,
  d.due_at
FROM subjects s JOIN categories cat ON cat.key = s.category
LEFT JOIN LATERAL (
  SELECT bool_or(x.running) AS running, max(x.ended) AS last_end FROM (
    SELECT lb.contract_end IS NULL AS running, lb.contract_end AS ended
    FROM lawful_bases lb WHERE lb.subject_id = s.id AND lb.basis = 'contract'
    UNION ALL
    SELECT false, least(coalesce((h.previous ->> 'contract_end')::timestamptz, h.at), h.at)
    FROM lawful_basis_history h
    WHERE h.subject_id = s.id AND h.previous ->> 'basis' = 'contract'
  ) x
) ct ON true
CROSS JOIN LATERAL (SELECT retention_due_at(cat.retention_rule, cat.retention_months,
  s.created_at, s.interest_ceased_at, ct.last_end, ct.running, :grace_days) AS due_at) d
WHERE s.erased_at IS NULL AND d.due_at IS NOT NULL
"""


def _grace_days() -> int:
    # The setting the app reads (CONSENT_RETENTION_PROSPECT_GRACE_DAYS), default 0.
    from app.core.config import get_settings

    return get_settings().retention_prospect_grace_days


def upgrade() -> None:
    op.create_table(
        "gate_moments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column(
            "subject_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("subjects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("purpose", sa.String(63), nullable=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(
        "CREATE UNIQUE INDEX ux_gate_moments_key"
        " ON gate_moments (subject_id, coalesce(purpose, ''), kind)"
    )
    op.create_index(
        "ix_gate_moments_due",
        "gate_moments",
        ["due_at"],
        postgresql_where=sa.text("fed_at IS NULL"),
    )
    op.execute(sa.text(BACKFILL).bindparams(grace_days=_grace_days()))


def downgrade() -> None:
    op.drop_table("gate_moments")
