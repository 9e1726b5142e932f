"""Retention (§7): the rule per subject category (catalogue data in `categories`) and the
sweep's report. The rules are stored as fields of the category; these are their views."""

import uuid
from datetime import datetime
from typing import Self

from pydantic import ConfigDict, model_validator
from sqlmodel import Field, SQLModel

from app.models.catalogue import RetentionRule

RULE_ANCHORS = {
    "contract_end_plus": "end of the last contract, or creation where there never was one",
    "interest_ceased": "interest_ceased_at, plus the grace period in settings",
    "fixed_period": "creation of the subject's record",
}


class RetentionRuleUpdate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    rule: RetentionRule
    months: int | None = Field(
        default=None,
        ge=1,
        le=1200,
        description="Months after the anchor; required for contract_end_plus and "
        "fixed_period, absent for interest_ceased",
    )

    @model_validator(mode="after")
    def _months(self) -> Self:
        if self.rule == "interest_ceased" and self.months is not None:
            raise ValueError("`interest_ceased` takes no `months` (the grace is a setting)")
        if self.rule != "interest_ceased" and self.months is None:
            raise ValueError(f"`{self.rule}` needs `months`")
        return self


class RetentionRulePublic(SQLModel):
    category: str
    description: str
    rule: RetentionRule
    months: int | None
    grace_days: int | None = Field(
        default=None, description="Days after interest_ceased_at (interest_ceased only)"
    )
    anchor: str = Field(description="What the period counts from")


class SweepItem(SQLModel):
    subject_id: uuid.UUID
    category: str
    rule: RetentionRule
    due_at: datetime = Field(description="When the retention period ended (UK calendar)")
    held_back: list[str] = Field(
        default_factory=list,
        description="Why it is not erased: open_rights_request, legal_obligation, "
        "running_contract, restricted (empty: erased, or to be erased)",
    )


class SweepReport(SQLModel):
    sweep_id: uuid.UUID | None = Field(default=None, description="Null on a dry run")
    dry_run: bool
    as_of: datetime
    grace_days: int
    due: int = Field(description="Subjects whose retention period has ended")
    erased: int = Field(description="Erased by this run (0 on a dry run)")
    held_back: int
    items: list[SweepItem]
