"""The trip tools as Agents SDK tools, their labels in the chat UI, and preloading their data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agents import FunctionTool
from agents.tool_context import ToolContext

from tripchat.tools import (
    TRIP_TOOLS,
    ToolError,
    describe_tool_call,
    find_destination,
    preload,
    public_holidays,
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
