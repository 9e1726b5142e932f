"""Retention rules per subject category: catalogue data, read by every role, set by admins."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.auth import Principal
from app.core.config import current_settings
from app.models.catalogue import Category
from app.models.retention import RULE_ANCHORS, RetentionRulePublic, RetentionRuleUpdate
from app.services.audit import entries as audit
from app.services.catalogue.known import unknown_key
from app.services.changes import clock


def grace_days() -> int:
    """The prospects' grace period; the gate reads the same setting."""
    return current_settings().retention_prospect_grace_days


def to_public(row: Category) -> RetentionRulePublic:
    return RetentionRulePublic(
        category=row.key,
        description=row.description,
        rule=row.retention_rule,  # type: ignore[arg-type]
        months=row.retention_months,
        grace_days=grace_days() if row.retention_rule == "interest_ceased" else None,
        anchor=RULE_ANCHORS.get(row.retention_rule, ""),
    )


async def list_rules(session: AsyncSession) -> list[RetentionRulePublic]:
    rows = (await session.execute(select(Category).order_by(col(Category.key)))).scalars()
    return [to_public(r) for r in rows]


async def get_rule(session: AsyncSession, category: str) -> RetentionRulePublic:
    row = await session.get(Category, category)
    if row is None:
        raise await unknown_key(session, "category", category, not_found=True)
    return to_public(row)


async def put_rule(
    session: AsyncSession, principal: Principal, *, category: str, data: RetentionRuleUpdate
) -> RetentionRulePublic:
    row = await session.get(Category, category, with_for_update=True)
    if row is None:
        raise await unknown_key(session, "category", category, not_found=True)
    previous = {"rule": row.retention_rule, "months": row.retention_months}
    row.retention_rule, row.retention_months = data.rule, data.months
    await session.flush()
    await clock.schedule(session, category=category)  # every due date of the category moves
    await audit.record(
        session,
        principal,
        "retention_rules.put",
        "category",
        category,
        rule=data.rule,
        months=data.months,
        previous=previous,
    )
    return to_public(row)
