"""Airports near a city, from airportsdata: the ones a traveller would likely fly from first."""

from __future__ import annotations

import functools
import re
from typing import Any

import airportsdata

from ._common import ToolError
from .places import haversine_km, label, resolve

AIRPORT_RADIUS_KM = 100.0
MAX_AIRPORTS = 10
_NON_CIVIL = re.compile(
    r"\b(air base|air force|afb|naval|navy|army|military|raf|raaf|seaplane|heliport)\b",
    re.IGNORECASE,
)
_CIVIL = re.compile(r"\b(international|municipal|regional)\b", re.IGNORECASE)


@functools.cache
def _airports() -> list[airportsdata.Airport]:
    """Airports with an IATA code: the data has no size or type field, and those are sold."""
    return list(airportsdata.load("IATA").values())


@functools.cache
def _metro_airports() -> frozenset[str]:
    """Airports IATA groups under a city code (CDG and ORY for Paris): the big ones."""
    cities = airportsdata.load_iata_macs().values()
    return frozenset(code for city in cities for code in city["airports"])


def _airport_rank(airport: airportsdata.Airport) -> int:
    """Distance alone puts an air base first for Paris and a seaplane base for New York, so the
    big metropolitan airports come first and bases last; bases are demoted, not dropped,
    because some carry airlines (Reus and Zaragoza are listed as 'Air Base')."""
    if airport["iata"] in _metro_airports():
        return 0
    name = airport["name"]
    return 2 if _NON_CIVIL.search(name) and not _CIVIL.search(name) else 1


def airports_near(place: str, limit: int = 3, country: str | None = None) -> dict[str, Any]:
    """List the airports with IATA codes within 100 km of a city, the likeliest to fly from first.

    Each airport has its IATA code, name, the city it lists, and distance_km from the city
    centre. A metropolitan area's main airports come first (CDG and ORY for Paris), then the
    others by distance, with air bases, seaplane bases and heliports last. Small airfields
    can appear: prefer well-known codes for flights.

    Args:
        place: City name, e.g. "Lisbon" or "Springfield, Illinois".
        limit: How many airports to return, 1 to 10.
        country: Optional country name or ISO code to pick the right city, e.g. "PT".
    """
    if not 1 <= limit <= MAX_AIRPORTS:
        raise ToolError(f"limit must be between 1 and {MAX_AIRPORTS}, got {limit}")
    city = resolve(place, country)
    nearby = []
    for airport in _airports():
        km = haversine_km(city.latitude, city.longitude, airport["lat"], airport["lon"])
        if km <= AIRPORT_RADIUS_KM:
            nearby.append((_airport_rank(airport), km, airport))
    nearby.sort(key=lambda row: row[:2])
    return {
        "place": label(city),
        "airports": [
            {
                "iata": airport["iata"],
                "name": airport["name"],
                "city": airport["city"],
                "distance_km": round(km, 1),
            }
            for _, km, airport in nearby[:limit]
        ],
    }


def preload() -> None:
    """Load the airports and IATA's metropolitan groups now."""
    _airports()
    _metro_airports()
