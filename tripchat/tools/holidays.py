"""National public holidays, from the holidays package."""

from __future__ import annotations

from typing import Any

import holidays

from ._common import ToolError, parse_date
from .places import country_code, country_name

MAX_HOLIDAY_SPAN_DAYS = 366


def _holiday_calendar(code: str, years: range) -> holidays.HolidayBase:
    """The country's holidays, named in English when the package can translate them."""
    try:
        probe = holidays.country_holidays(code)
    except NotImplementedError:
        raise ToolError(f"No public holiday data for {country_name(code)}.") from None
    default = probe.default_language or "en"
    english = not default.startswith("en") and "en_US" in probe.supported_languages
    return holidays.country_holidays(code, years=years, language="en_US" if english else None)


def public_holidays(country: str, start: str, end: str) -> dict[str, Any]:
    """List a country's national public holidays between two dates, inclusive.

    Regional holidays are not included. The range may span at most 366 days.

    Args:
        country: Country name or ISO code, e.g. "Portugal" or "PT".
        start: First date, as YYYY-MM-DD.
        end: Last date, as YYYY-MM-DD.
    """
    code = country_code(country)
    first, last = parse_date(start), parse_date(end)
    if last < first:
        raise ToolError(f"end date {last} is before start date {first}")
    span = (last - first).days + 1
    if span > MAX_HOLIDAY_SPAN_DAYS:
        raise ToolError(
            f"date range is {span} days; ask for at most {MAX_HOLIDAY_SPAN_DAYS} days at a time"
        )
    calendar = _holiday_calendar(code, range(first.year, last.year + 1))
    return {
        "country": country_name(code),
        "country_code": code,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "holidays": [
            {"date": day.isoformat(), "name": name, "weekday": day.strftime("%A")}
            for day, name in sorted(calendar.items())
            if first <= day <= last
        ],
    }


def preload() -> None:
    """Load the package's shared code now."""
    holidays.country_holidays("US")  # loads the package's shared code: a country then takes 1 ms
