"""Shared column helpers and the metadata naming convention (stable names for Alembic)."""

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator
from sqlalchemy import DateTime
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp_field(**kwargs: Any) -> Any:
    """A timestamptz column (SQLModel's default datetime column has no time zone)."""
    return Field(sa_type=DateTime(timezone=True), **kwargs)  # type: ignore[call-overload]


def _date_to_datetime(value: Any) -> Any:
    """Accept a date ("2027-01-31") as midnight UTC; pass date-times through."""
    if isinstance(value, str) and len(value) == 10:
        return f"{value}T00:00:00Z"
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def _require_tz(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


DateOrDateTime = Annotated[
    AwareDatetime | datetime,
    BeforeValidator(_date_to_datetime),
    AfterValidator(_require_tz),
]
