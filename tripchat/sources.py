"""Where a reply's facts came from: each data tool's call as a source the client lists.

The tools answer from offline data sets, so the source names the data set and what was
looked up ("Public holidays in France, 1–5 May 2026"); an errored call supplied nothing.
"""

from __future__ import annotations

from typing import Any

from chatkit.types import Annotation, URLSource

from .tools import describe_tool_call

_DATA_SETS: dict[str, tuple[str, str]] = {
    "public_holidays": ("python-holidays", "https://github.com/vacanza/holidays"),
    "airports_near": ("airportsdata", "https://github.com/mborsetti/airportsdata"),
    "local_time": ("IANA time zone database", "https://www.iana.org/time-zones"),
    "find_destination": ("GeoNames", "https://www.geonames.org/"),
    "distance_between": ("GeoNames", "https://www.geonames.org/"),
}


def source_for(tool_name: str, arguments: dict[str, Any] | str, output: str) -> URLSource | None:
    """The source a tool call supplied, or None (no data set behind it, or it failed)."""
    data_set = _DATA_SETS.get(tool_name)
    if data_set is None or output.startswith("Error:"):
        return None
    attribution, url = data_set
    return URLSource(
        title=describe_tool_call(tool_name, arguments),
        url=url,
        attribution=attribution,
        group="Travel data",
    )


def source_annotations(sources: list[URLSource]) -> list[Annotation]:
    """One annotation per distinct source, in the order the tools ran."""
    unique = {(source.title, source.url): source for source in sources}
    return [Annotation(source=source) for source in unique.values()]
