"""Offline trip-planning tools: places, airports, distances, holidays, local times, calendars.

The pure functions are the tested core and need no network. ``TRIP_TOOLS`` wraps them for the
Agents SDK so that a bad argument reaches the model as a short "Error: ..." it can act on,
instead of an exception that would end the turn. The data files are large (indexing the city
list takes about two seconds), so each is loaded on first use and kept for the process;
``preload`` loads them ahead, so that a server's first user does not wait.
"""

from __future__ import annotations

from . import airports, holidays, places
from ._common import ToolError
from .airports import airports_near
from .dates import local_time, trip_calendar
from .holidays import public_holidays
from .places import distance_between, find_destination
from .sdk import TRIP_TOOLS, describe_tool_call

__all__ = [
    "TRIP_TOOLS",
    "ToolError",
    "airports_near",
    "describe_tool_call",
    "distance_between",
    "find_destination",
    "local_time",
    "preload",
    "public_holidays",
    "trip_calendar",
]


def preload() -> None:
    """Load all the data the tools use now (about two seconds), e.g. in a worker thread at
    server start-up, rather than in the first conversation that needs it."""
    places.preload()
    airports.preload()
    holidays.preload()
