"""Rights-request deadlines (Art 12(3), ICO guidance).

Due = the corresponding calendar day N months after receipt, or that month's last day where
there is none (31 Jan -> 28/29 Feb); where that falls on a weekend or a bank holiday in
England and Wales, the next working day. Clock pauses (waiting for ID or clarification)
are out of scope.
"""

import calendar
from datetime import UTC, date, datetime
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


def due_date(received_at: datetime, extension_months: int = 0) -> date:
    """One month from receipt, plus any extension (1 or 2 months), by the rule above."""
    return next_working_day(add_months(receipt_day(received_at), 1 + extension_months))


def today_uk(now: datetime | None = None) -> date:
    return receipt_day(now or datetime.now(UTC))
