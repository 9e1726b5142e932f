"""Rights-request deadlines (Art 12(3), ICO guidance).

Due = the corresponding calendar day N months after receipt, or that month's last day where
there is none (31 Jan -> 28/29 Feb); where that falls on a weekend or a bank holiday in
England and Wales, the next working day.

Stop the clock (ICO guidance): while a request waits for the person (identity,
clarification, a fee) its clock is paused. Each ended pause adds its calendar days (UK
dates from the pause to the resume) to the due date above, and the result moves to the
next working day by the same rule: due = working day on or after (due without pauses +
all paused days).
"""

import calendar
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

LONDON = ZoneInfo("Europe/London")


@lru_cache(maxsize=64)
def _bank_holidays(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("GB", subdiv="ENG", years=[year])


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _bank_holidays(day.year)


def add_months(day: date, months: int) -> date:
    """The corresponding day `months` later, clamped to the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def next_working_day(day: date) -> date:
    while not is_working_day(day):
        day = date.fromordinal(day.toordinal() + 1)
    return day


def receipt_day(received_at: datetime) -> date:
    """The calendar day of receipt in the UK."""
    aware = received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC)
    return aware.astimezone(LONDON).date()


def due_date(received_at: datetime, extension_months: int = 0, paused_days: int = 0) -> date:
    """One month from receipt, plus any extension (1 or 2 months), by the rule above, then
    moved by the days the clock was stopped and again to a working day."""
    due = next_working_day(add_months(receipt_day(received_at), 1 + extension_months))
    return next_working_day(due + timedelta(days=paused_days)) if paused_days else due


def days_paused(since: datetime, until: datetime) -> int:
    """Calendar days between two moments, counted on UK dates (same day: 0)."""
    return max(0, (receipt_day(until) - receipt_day(since)).days)


def today_uk(now: datetime | None = None) -> date:
    return receipt_day(now or datetime.now(UTC))
