"""Shared column helpers and the metadata naming convention (stable names for Alembic)."""

from datetime import UTC, date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, WithJsonSchema
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


LONDON = ZoneInfo("Europe/London")
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _date_only(value: Any) -> date | None:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    return None


def _start_of_day(value: Any) -> Any:
    """A date ("2027-01-31") means from the start of that day, UK time."""
    day = _date_only(value)
    return value if day is None else datetime(day.year, day.month, day.day, tzinfo=LONDON)


def _end_of_day(value: Any) -> Any:
    """A date as an end ("contract_end": "2027-01-31") runs through that day, UK time:
    it is stored as the next midnight."""
    day = _date_only(value)
    if day is None:
        return value
    after = date.fromordinal(day.toordinal() + 1)
    return datetime(after.year, after.month, after.day, tzinfo=LONDON)


def _bounded(value: datetime) -> datetime:
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    if not EARLIEST <= value <= LATEST:
        raise ValueError("must be between the years 1900 and 9000")
    return value


EVENT_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def _text_only(value: Any) -> Any:
    """A time is RFC 3339 text: a bare number (0 -> 1970) is refused, not read as Unix time."""
    if isinstance(value, int | float):  # bool is an int too
        raise ValueError("must be an RFC 3339 date-time string")
    return value


def _event_bounded(value: datetime) -> datetime:
    value = _bounded(value)
    if value < EVENT_EARLIEST:
        raise ValueError("must not be before 2000-01-01")
    return value


# What a date field accepts, as the OpenAPI document says it: without it the document said
# `date-time` only (the type the validators produce), and clients generated from it refused
# to send a date. Input only: such a field is always answered as a date-time.
DATE_OR_DATE_TIME = WithJsonSchema(
    {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]},
    mode="validation",
)
# Date fields accept a date or a date-time (API.md); a date-time without an offset is UTC.
DateOrDateTime = Annotated[
    datetime,
    BeforeValidator(_start_of_day),
    BeforeValidator(_text_only),
    AfterValidator(_bounded),
    DATE_OR_DATE_TIME,
]
EndDateOrDateTime = Annotated[
    datetime,
    BeforeValidator(_end_of_day),
    BeforeValidator(_text_only),
    AfterValidator(_bounded),
    DATE_OR_DATE_TIME,
]
# Event times must carry their offset (RFC 3339) and fall after 2000 (issue 14: `0` or
# 1900 is a client's mistake, not a consent given or a request received then).
Timestamp = Annotated[AwareDatetime, BeforeValidator(_text_only), AfterValidator(_event_bounded)]
# An event time entered late, as a date or a date-time (a letter's `received_at`): same floor.
EventDateOrDateTime = Annotated[
    datetime,
    BeforeValidator(_start_of_day),
    BeforeValidator(_text_only),
    AfterValidator(_event_bounded),
    DATE_OR_DATE_TIME,
]
