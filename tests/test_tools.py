"""The trip tools against the real offline data, as pure functions and as Agents SDK tools."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from agents import FunctionTool
from agents.tool_context import ToolContext

from tripchat.tools import (
    TRIP_TOOLS,
    ToolError,
    _NameIndex,
    airports_near,
    describe_tool_call,
    distance_between,
    find_destination,
    local_time,
    preload,
    public_holidays,
    trip_calendar,
)

TOOLS = {tool.name: tool for tool in TRIP_TOOLS}


async def invoke(tool_name: str, arguments: dict[str, Any]) -> str:
    """Call a tool the way the Agents SDK runner does: with a ToolContext and JSON arguments."""
    raw = json.dumps(arguments)
    context: ToolContext[None] = ToolContext(
        context=None, tool_name=tool_name, tool_call_id="call_test", tool_arguments=raw
    )
    result = await TOOLS[tool_name].on_invoke_tool(context, raw)
    assert isinstance(result, str)
    return result


def test_lisbon_is_in_portugal() -> None:
    lisbon = find_destination("Lisbon")
    assert lisbon["name"] == "Lisbon"
    assert (lisbon["country"], lisbon["country_code"]) == ("Portugal", "PT")
    assert lisbon["timezone"] == "Europe/Lisbon"
    assert lisbon["population"] > 400_000
    assert lisbon["latitude"] == pytest.approx(38.7, abs=0.1)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Lisboa", "Lisbon"),
        ("LISBOA", "Lisbon"),
        ("lisbon", "Lisbon"),
        ("sao paulo", "São Paulo"),
        ("Zurich", "Zürich"),
        ("München", "Munich"),
        ("Washington, D.C.", "Washington"),
    ],
)
def test_names_match_ignoring_case_accents_and_language(query: str, expected: str) -> None:
    assert find_destination(query)["name"] == expected


def test_a_dominant_city_wins_over_namesakes() -> None:
    paris = find_destination("Paris")
    assert "ambiguous" not in paris
    assert paris["country_code"] == "FR"


# Florence, Italy has 9.2 times the people of Florence, Alabama; Geneva 9.3 times Geneva, Illinois.
@pytest.mark.parametrize(("query", "country_code"), [("Florence", "IT"), ("Geneva", "CH")])
def test_a_city_several_times_larger_than_any_namesake_wins(
    query: str, country_code: str
) -> None:
    city = find_destination(query)
    assert "ambiguous" not in city
    assert (city["name"], city["country_code"]) == (query, country_code)


@pytest.mark.parametrize(("query", "country_code"), [("Positano", "IT"), ("Hallstatt", "AT")])
def test_villages_resolve(query: str, country_code: str) -> None:
    assert find_destination(query)["country_code"] == country_code


@pytest.mark.parametrize(
    ("query", "country_code"),
    [
        # geonames lists "Porto" as an alternate name of Bordeaux and "Rome" of Lomé.
        ("Porto", "PT"),
        ("Rome", "IT"),
        # ... and "Cancún" of Changchun (5.3 times larger) and "Pāli" of Paris (9.3 times).
        ("Cancún", "MX"),
        ("Pāli", "IN"),
    ],
)
def test_a_big_city_with_the_name_only_as_an_alternate_does_not_win(
    query: str, country_code: str
) -> None:
    assert find_destination(query)["country_code"] == country_code


def test_an_ambiguous_name_returns_candidates_largest_first() -> None:
    result = find_destination("Springfield")
    assert result["ambiguous"] is True
    candidates = result["candidates"]
    assert 2 <= len(candidates) <= 5
    assert {c["name"] for c in candidates} == {"Springfield"}
    populations = [c["population"] for c in candidates]
    assert populations == sorted(populations, reverse=True)
    assert all(c["region"] for c in candidates)  # US states, to tell them apart


def test_ambiguity_spans_countries() -> None:
    result = find_destination("San Jose")
    assert result["ambiguous"] is True
    assert {"US", "CR"} <= {c["country_code"] for c in result["candidates"]}


@pytest.mark.parametrize(
    ("name", "country", "region", "country_code"),
    [
        ("Springfield, Illinois", None, "Illinois", "US"),
        ("Springfield, IL", None, "Illinois", "US"),
        ("Paris, Texas", None, "Texas", "US"),
        ("San Jose", "Costa Rica", None, "CR"),
        ("Paris", "FR", None, "FR"),
    ],
)
def test_country_or_region_narrows_the_match(
    name: str, country: str | None, region: str | None, country_code: str
) -> None:
    city = find_destination(name, country)
    assert (city["region"], city["country_code"]) == (region, country_code)


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


def test_london_to_lisbon() -> None:
    result = distance_between("London", "Lisbon")
    assert 1550 <= result["distance_km"] <= 1610
    assert result["distance_miles"] == pytest.approx(result["distance_km"] / 1.609344, abs=1)
    assert result["flight_hours"] == pytest.approx(result["distance_km"] / 800 + 0.5, abs=0.01)
    assert result["flight_time"] == "2 h 30 min"


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
    (
        lambda: find_destination("Xyzzyville"),
        "No city named 'Xyzzyville'. Check the spelling or add the country.",
    ),
    (lambda: find_destination("Lisbon", country="Narnia"), "Unknown country 'Narnia'"),
    (lambda: find_destination("Springfield, Narnia"), "Unknown region 'Narnia'"),
    (lambda: airports_near("Springfield"), "'Springfield' is ambiguous: Springfield, Missouri"),
    (lambda: airports_near("Lisbon", limit=0), "limit must be between 1 and 10, got 0"),
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
    (lambda: trip_calendar("2025-04-20", 0), "nights must be between 1 and 60, got 0"),
    (lambda: trip_calendar("2025-04-20", 61), "nights must be between 1 and 60, got 61"),
    (lambda: local_time("Lisbon", at="tomorrow"), "got 'tomorrow'"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_arguments_raise_tool_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ToolError, match=re.escape(message)):
        call()


def test_tool_error_is_a_value_error() -> None:
    assert issubclass(ToolError, ValueError)


def test_the_sdk_tools_have_strict_schemas() -> None:
    assert list(TOOLS) == [
        "find_destination",
        "airports_near",
        "distance_between",
        "public_holidays",
        "local_time",
        "trip_calendar",
    ]
    for tool in TRIP_TOOLS:
        assert isinstance(tool, FunctionTool)
        assert tool.strict_json_schema
        schema = tool.params_json_schema
        assert schema["additionalProperties"] is False
        assert sorted(schema["required"]) == sorted(schema["properties"])
        assert tool.description
        assert all(p.get("description") for p in schema["properties"].values())
    country = TOOLS["find_destination"].params_json_schema["properties"]["country"]
    assert country["anyOf"] == [{"type": "string"}, {"type": "null"}]


@pytest.mark.anyio
async def test_a_tool_returns_compact_json() -> None:
    arguments = {"country": "PT", "start": "2025-04-20", "end": "2025-04-30"}
    output = await invoke("public_holidays", arguments)
    assert ", " not in output and ": " not in output
    assert json.loads(output) == public_holidays("PT", "2025-04-20", "2025-04-30")


@pytest.mark.anyio
async def test_a_tool_keeps_non_ascii_text_readable() -> None:
    output = await invoke("find_destination", {"name": "sao paulo", "country": None})
    assert '"name":"São Paulo"' in output


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("find_destination", {"name": "Xyzzyville", "country": None}, "No city named"),
        (
            "public_holidays",
            {"country": "PT", "start": "2025-04-20", "end": "2025-04-01"},
            "end date 2025-04-01 is before start date 2025-04-20",
        ),
        (
            "public_holidays",
            {"country": "Narnia", "start": "2025-04-20", "end": "2025-04-30"},
            "Unknown country 'Narnia'",
        ),
        ("trip_calendar", {"start": "20/04/2025", "nights": 3}, "dates must be YYYY-MM-DD"),
        ("trip_calendar", {"start": "2025-04-20", "nights": 0}, "nights must be between 1 and 60"),
        ("distance_between", {"origin": "Springfield", "destination": "Lisbon"}, "'Springfield'"),
    ],
)
async def test_a_tool_reports_bad_arguments_as_text(
    name: str, arguments: dict[str, Any], message: str
) -> None:
    output = await invoke(name, arguments)
    assert output.startswith("Error: ")
    assert message in output


@pytest.mark.parametrize(
    ("name", "arguments", "label"),
    [
        (
            "public_holidays",
            {"country": "Portugal", "start": "2025-04-20", "end": "2025-04-30"},
            "Public holidays in Portugal, 20–30 Apr 2025",
        ),
        (
            "public_holidays",
            {"country": "PT", "start": "2025-12-28", "end": "2026-01-03"},
            "Public holidays in Portugal, 28 Dec 2025 – 3 Jan 2026",
        ),
        ("airports_near", {"place": "Lisbon", "limit": 3, "country": None}, "Airports near Lisbon"),
        (
            "distance_between",
            {"origin": "London", "destination": "Lisbon"},
            "Distance London → Lisbon",
        ),
        ("find_destination", {"name": "Lisbon", "country": None}, "Finding Lisbon"),
        ("local_time", {"place": "Tokyo", "other": None, "at": None}, "Local time in Tokyo"),
        (
            "local_time",
            {"place": "London", "other": "Tokyo", "at": None},
            "Local time in London and Tokyo",
        ),
        (
            "trip_calendar",
            {"start": "2025-04-20", "nights": 4},
            "Trip calendar from 20 Apr 2025, 4 nights",
        ),
    ],
)
def test_describe_tool_call(name: str, arguments: dict[str, Any], label: str) -> None:
    assert describe_tool_call(name, arguments) == label


def test_describe_tool_call_reads_the_json_text_the_model_sent() -> None:
    arguments = '{"origin": "London", "destination": "Lisboa"}'
    assert describe_tool_call("distance_between", arguments) == "Distance London → Lisboa"


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("trip_calendar", {}),
        ("trip_calendar", {"start": "soon", "nights": 2}),
        ("public_holidays", {"country": "PT", "start": 20250420, "end": None}),
        ("airports_near", None),
        ("no_such_tool", {"place": "Lisbon"}),
        ("find_destination", '{"name": "Lis'),
        ("find_destination", '["Lisbon"]'),
        ("find_destination", ""),
        pytest.param("find_destination", "[" * 100_000, id="deeply-nested-json"),
    ],
)
def test_describe_tool_call_falls_back_to_the_tool_name(name: str, arguments: Any) -> None:
    assert describe_tool_call(name, arguments) == name


def test_preload_readies_the_tools() -> None:
    preload()
    assert find_destination("Lisbon")["country_code"] == "PT"


def test_the_name_index_grows_past_its_initial_size() -> None:
    index = _NameIndex(2)
    for position in range(1000):
        index.add(f"town {position % 300}", position)
    assert index.get("town 7") == [7, 307, 607, 907]
    assert "town 299" in index
    assert "town 300" not in index
    assert index.get("town 300") == []
