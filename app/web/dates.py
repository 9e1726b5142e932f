"""Dates and times as the pages show them: the UK's way ("4 December 2026, 18:29"), on
the UK's clock (Europe/London), never a raw ISO timestamp. The API keeps RFC 3339 UTC; only
what a reader sees is formatted here.

The services hand the pages dates in several shapes (a `date`, an aware or naive
`datetime`, or the ISO text of either, as the overview's JSON carries them), so the one
filter takes them all.
"""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

UK = ZoneInfo("Europe/London")
# `%B` and `%b` are the C locale's English month names, whatever the server's locale:
# Python's strftime uses the process locale, which the service never changes.
MONTH_FORMAT = {True: "%b %Y", False: "%B %Y"}


def _parsed(value: str) -> date | datetime:
    text = value.strip()
    if len(text) == 10:  # YYYY-MM-DD: a calendar date, no clock to convert
        return date.fromisoformat(text)
    return datetime.fromisoformat(text)


def uk_date(value: date | datetime | str | None, time: bool = True) -> str:
    """`4 December 2026, 18:29` for an instant (in Europe/London), `4 December 2026` for a
    calendar date or with `time=False`; empty for None."""
    if value is None or value == "":
        return ""
    when = _parsed(value) if isinstance(value, str) else value
    if isinstance(when, datetime):
        # Stored instants are UTC; a naive one (a driver's or a test's) is taken as UTC.
        aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        local = aware.astimezone(UK)
        day = f"{local.day} {local:%B %Y}"
        return f"{day}, {local:%H:%M}" if time else day
    return f"{when.day} {when:%B %Y}"


def month_label(month: str, short: bool = True) -> str:
    """`2026-01` (a UK calendar month, as the overview counts them) as `Jan 2026`, or
    `January 2026` with `short=False`."""
    first = date.fromisoformat(f"{month}-01")
    return first.strftime(MONTH_FORMAT[short])
