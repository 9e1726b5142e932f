"""Deadline arithmetic: month ends, leap years, weekends and UK bank holidays."""

from datetime import UTC, date, datetime

import pytest

from app.services.rights.deadlines import add_months, due_date


def at(y, m, d, hour=12):
    return datetime(y, m, d, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("received", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # leap year
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 8, 31), 6, date(2027, 2, 28)),
    ],
)
def test_add_months_clamps_to_the_last_day(received, months, expected):
    assert add_months(received, months) == expected


@pytest.mark.parametrize(
    ("received", "expected", "why"),
    [
        (at(2026, 3, 10), date(2026, 4, 10), "plain Friday"),
        (at(2026, 1, 31), date(2026, 3, 2), "28 Feb 2026 is a Saturday -> Monday"),
        (at(2028, 1, 31), date(2028, 2, 29), "leap year: Tuesday 29 Feb"),
        (at(2027, 1, 29), date(2027, 3, 1), "28 Feb 2027 is a Sunday -> Monday 1 Mar"),
        (at(2026, 4, 25), date(2026, 5, 26), "25 May 2026 is the Spring bank holiday"),
        (at(2026, 11, 25), date(2026, 12, 29), "25 Dec Fri, 28 Dec Boxing Day observed"),
        (at(2026, 7, 31), date(2026, 9, 1), "31 Aug 2026 is a bank holiday"),
        (at(2026, 5, 31, hour=23), date(2026, 7, 1), "23:00 UTC on 31 May is 1 June in London"),
    ],
)
def test_due_dates(received, expected, why):
    assert due_date(received) == expected, why


def test_extension_counts_from_receipt():
    assert due_date(at(2026, 1, 31), extension_months=2) == date(2026, 4, 30)
    assert due_date(at(2026, 1, 31), extension_months=1) == date(2026, 3, 31)
