"""Finding places and the distances between them, against the real geonames data."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tripchat.tools import ToolError, distance_between, find_destination
from tripchat.tools._cityindex import _NameIndex


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
def test_a_city_several_times_larger_than_any_namesake_wins(query: str, country_code: str) -> None:
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


def test_london_to_lisbon() -> None:
    result = distance_between("London", "Lisbon")
    assert 1550 <= result["distance_km"] <= 1610
    assert result["distance_miles"] == pytest.approx(result["distance_km"] / 1.609344, abs=1)
    assert result["flight_hours"] == pytest.approx(result["distance_km"] / 800 + 0.5, abs=0.01)
    assert result["flight_time"] == "2 h 30 min"


def test_the_name_index_grows_past_its_initial_size() -> None:
    index = _NameIndex(2)
    for position in range(1000):
        index.add(f"town {position % 300}", position)
    assert index.get("town 7") == [7, 307, 607, 907]
    assert "town 299" in index
    assert "town 300" not in index
    assert index.get("town 300") == []


BAD_CALLS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: find_destination("Xyzzyville"),
        "No city named 'Xyzzyville'. Check the spelling or add the country.",
    ),
    (lambda: find_destination("Lisbon", country="Narnia"), "Unknown country 'Narnia'"),
    (lambda: find_destination("Springfield, Narnia"), "Unknown region 'Narnia'"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_arguments_raise_tool_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ToolError, match=re.escape(message)):
        call()
