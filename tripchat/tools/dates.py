"""Clocks and calendars: a city's local time and UTC offset, and a stay laid out day by day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ._common import ToolError, parse_date
from .places import label, resolve

MAX_NIGHTS = 60


def _parse_instant(value: str) -> datetime:
    """An ISO date-time as an aware UTC instant; a naive one is taken to be UTC already."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ToolError(
            f"times must be ISO date-times such as 2025-01-15T12:00 (UTC), got {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _format_offset(offset: timedelta) -> str:
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def local_time(place: str, other: str | None = None, at: str | None = None) -> dict[str, Any]:
    """Local time and UTC offset in a city, and optionally the time difference to another.

    difference_hours is the other city's clock minus this city's (London → Tokyo in
    January is 9). Daylight saving time is taken into account for the chosen moment.

    Args:
        place: City name, e.g. "London".
        other: Optional second city to compare with, e.g. "Tokyo".
        at: Optional moment as an ISO date-time in UTC, e.g. "2025-01-15T12:00"; default now.
    """
    instant = _parse_instant(at) if at else datetime.now(UTC)
    cities = [resolve(place)] + ([resolve(other)] if other else [])
    clocks = [instant.astimezone(ZoneInfo(city.timezone)) for city in cities]
    offsets = [clock.utcoffset() or timedelta() for clock in clocks]
    result: dict[str, Any] = {
        "utc_time": instant.isoformat(timespec="minutes"),
        "places": [
            {
                "place": label(city),
                "timezone": city.timezone,
                "local_time": clock.isoformat(timespec="minutes"),
                "weekday": clock.strftime("%A"),
                "utc_offset": _format_offset(offset),
            }
            for city, clock, offset in zip(cities, clocks, offsets, strict=True)
        ],
    }
    if other:
        result["difference_hours"] = (offsets[1] - offsets[0]).total_seconds() / 3600
    return result


def trip_calendar(start: str, nights: int) -> dict[str, Any]:
    """Lay out a stay day by day: each date and weekday, the check-out date and weekend days.

    days runs from the arrival date to the check-out date inclusive; weekend_days lists the
    Saturdays and Sundays among them.

    Args:
        start: Arrival date, as YYYY-MM-DD.
        nights: Number of nights, 1 to 60.
    """
    if not 1 <= nights <= MAX_NIGHTS:
        raise ToolError(f"nights must be between 1 and {MAX_NIGHTS}, got {nights}")
    arrival = parse_date(start)
    days = [arrival + timedelta(days=offset) for offset in range(nights + 1)]
    return {
        "start": arrival.isoformat(),
        "check_out": days[-1].isoformat(),
        "nights": nights,
        "days": [{"date": day.isoformat(), "weekday": day.strftime("%A")} for day in days],
        "weekend_days": [day.isoformat() for day in days if day.weekday() >= 5],
    }
