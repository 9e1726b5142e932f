"""The controller's identity as catalogue data (DOMAIN.md "The controller"): one row, read
by receipts, consent proofs, the record of processing, access reports and the person's
pages, and replaced by an admin with `PUT /v1/controller`.

Seeded from the settings the service read until now (CONSENT_CONTROLLER_NAME,
_EMAIL, _PHONE, _ADDRESS and CONSENT_SUPERVISORY_AUTHORITY), whose defaults are the
policy's §1/§11 values: a deployment that had set them keeps its identity. From here on the
row is the only source; the settings are read by this migration alone. The policy names no
data protection officer and no Art 27 representative: both start null.

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _seed() -> dict[str, Any]:
    # The settings the app read before this revision; their defaults are the policy's.
    from app.core.config import get_settings

    s = get_settings()
    return {
        "id": True,
        "name": s.controller_name,
        "email": s.controller_email,
        "address": s.controller_address,
        "phone": s.controller_phone,
        "dpo_email": None,
        "representative": None,
        "supervisory_authority": s.supervisory_authority,
    }


def upgrade() -> None:
    controller = op.create_table(
        "controller",
        sa.Column("id", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("address", sa.String(length=1000), nullable=False),
        sa.Column("phone", sa.String(length=50), nullable=True),
        sa.Column("dpo_email", sa.String(length=254), nullable=True),
        sa.Column("representative", sa.String(length=1000), nullable=True),
        sa.Column("supervisory_authority", sa.String(length=300), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        # The key is always true: at most one row, ever.
        sa.CheckConstraint("id", name=op.f("ck_controller_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_controller")),
    )
    op.bulk_insert(controller, [_seed()])


def downgrade() -> None:
    op.drop_table("controller")
