"""The tools as the Agents SDK sees them, and the labels a chat UI shows for their calls."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import date
from typing import Any, ParamSpec

from agents import FunctionTool, function_tool

from ._common import ToolError, parse_date
from .airports import airports_near
from .dates import local_time, trip_calendar
from .holidays import public_holidays
from .places import country_codes, country_key, country_name, distance_between, find_destination


def _short_date(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def _date_range(start: str, end: str) -> str:
    """'20–30 Apr 2025', sharing the month and year when the two dates do."""
    first, last = parse_date(start), parse_date(end)
    if first == last:
        return _short_date(first)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{last.day} {last:%b %Y}"
    if first.year == last.year:
        return f"{first.day} {first:%b} – {_short_date(last)}"
    return f"{_short_date(first)} – {_short_date(last)}"


def _country_label(country: str) -> str:
    code = country_codes().get(country_key(country))
    return country_name(code) if code else country


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
        f"Trip calendar from {_short_date(parse_date(a['start']))}, {_nights(int(a['nights']))}"
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
    except Exception:
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
