"""Local times and trip calendars."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tripchat.tools import ToolError, local_time, trip_calendar


def test_trip_calendar_counts_nights_and_weekends() -> None:
    result = trip_calendar("2025-04-25", 3)  # Friday
    assert result["nights"] == 3
    assert result["check_out"] == "2025-04-28"
    assert [d["weekday"] for d in result["days"]] == ["Friday", "Saturday", "Sunday", "Monday"]
    assert result["weekend_days"] == ["2025-04-26", "2025-04-27"]


def test_trip_calendar_runs_from_arrival_to_check_out() -> None:
    result = trip_calendar("2025-12-30", 4)
    assert [d["date"] for d in result["days"]] == [
        "2025-12-30",
        "2025-12-31",
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
    ]
    assert result["weekend_days"] == ["2026-01-03"]


def test_local_time_at_a_fixed_moment() -> None:
    result = local_time("Tokyo", at="2025-01-15T12:00")
    assert result["utc_time"] == "2025-01-15T12:00+00:00"
    [tokyo] = result["places"]
    assert tokyo["timezone"] == "Asia/Tokyo"
    assert tokyo["local_time"] == "2025-01-15T21:00+09:00"
    assert tokyo["utc_offset"] == "+09:00"
    assert "difference_hours" not in result


@pytest.mark.parametrize(("at", "hours"), [("2025-01-15T12:00", 9), ("2025-07-15T12:00Z", 8)])
def test_time_difference_london_to_tokyo_follows_daylight_saving(at: str, hours: int) -> None:
    result = local_time("London", "Tokyo", at=at)
    assert result["difference_hours"] == hours


def test_a_moment_with_an_offset_is_converted_to_utc() -> None:
    result = local_time("Delhi", at="2025-07-15T12:00+02:00")
    assert result["utc_time"] == "2025-07-15T10:00+00:00"
    assert result["places"][0]["local_time"] == "2025-07-15T15:30+05:30"


BAD_CALLS: list[tuple[Callable[[], object], str]] = [
    (lambda: trip_calendar("2025-04-20", 0), "nights must be between 1 and 60, got 0"),
    (lambda: trip_calendar("2025-04-20", 61), "nights must be between 1 and 60, got 61"),
    (lambda: local_time("Lisbon", at="tomorrow"), "got 'tomorrow'"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_arguments_raise_tool_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ToolError, match=re.escape(message)):
        call()
