"""Public holidays, against the real holidays package."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tripchat.tools import ToolError, public_holidays


def test_freedom_day_is_a_public_holiday_in_portugal() -> None:
    result = public_holidays("Portugal", "2025-04-20", "2025-04-30")
    assert result["country_code"] == "PT"
    by_date = {h["date"]: h for h in result["holidays"]}
    freedom_day = {"date": "2025-04-25", "name": "Freedom Day", "weekday": "Friday"}
    assert by_date["2025-04-25"] == freedom_day
    assert all("2025-04-20" <= day <= "2025-04-30" for day in by_date)


def test_holidays_across_new_year_by_iso_code() -> None:
    dates = [h["date"] for h in public_holidays("PT", "2025-12-20", "2026-01-05")["holidays"]]
    assert dates == ["2025-12-25", "2026-01-01"]


BAD_CALLS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: public_holidays("PT", "2025-04-20", "2025-04-01"),
        "end date 2025-04-01 is before start date 2025-04-20",
    ),
    (
        lambda: public_holidays("PT", "20/04/2025", "2025-04-30"),
        "dates must be YYYY-MM-DD, got '20/04/2025'",
    ),
    (lambda: public_holidays("PT", "2025-02-30", "2025-03-01"), "not a real calendar date"),
    (
        lambda: public_holidays("Narnia", "2025-04-20", "2025-04-30"),
        "Unknown country 'Narnia': use a country name or ISO code such as PT",
    ),
    (lambda: public_holidays("PT", "2025-01-01", "2026-01-02"), "at most 366 days"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_arguments_raise_tool_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ToolError, match=re.escape(message)):
        call()
