"""Airports near a city, against the real airportsdata."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tripchat.tools import ToolError, airports_near


def test_lis_serves_lisbon() -> None:
    result = airports_near("Lisbon")
    assert result["place"] == "Lisbon, Portugal"
    airports = result["airports"]
    assert airports[0]["iata"] == "LIS"
    assert 1 <= len(airports) <= 3
    assert all(a["distance_km"] <= 100 for a in airports)


def test_a_metropolitan_areas_main_airports_come_first() -> None:
    codes = [a["iata"] for a in airports_near("Paris", limit=2)["airports"]]
    assert sorted(codes) == ["CDG", "ORY"]


BAD_CALLS: list[tuple[Callable[[], object], str]] = [
    (lambda: airports_near("Springfield"), "'Springfield' is ambiguous: Springfield, Missouri"),
    (lambda: airports_near("Lisbon", limit=0), "limit must be between 1 and 10, got 0"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_arguments_raise_tool_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ToolError, match=re.escape(message)):
        call()
