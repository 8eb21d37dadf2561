"""The trip planner end to end: real openai client and Agents SDK runner against the mock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from agents import Runner, set_tracing_disabled
from agents.tracing import get_trace_provider
from agents.tracing.processors import default_exporter
from agents.tracing.traces import NoOpTrace
from openai_mock import OpenAIMock

from tripchat.agent import configure_tracing, create_trip_planner_agent, openai_client
from tripchat.config import Settings
from tripchat.memory import StoreSession
from tripchat.store import SQLStore, open_store

pytestmark = pytest.mark.anyio

TOOL_NAMES = {
    "find_destination",
    "airports_near",
    "distance_between",
    "public_holidays",
    "local_time",
    "trip_calendar",
}
HOLIDAYS_CALL = (
    '[call public_holidays {"country": "PT", "start": "2025-04-20", "end": "2025-04-30"}]'
)


@dataclass(frozen=True)
class Mode:
    """One of the two model APIs, and how to read its request bodies."""

    chat: bool

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.chat else "/v1/responses"

    def instructions(self, body: dict[str, Any]) -> str:
        if self.chat:
            first = body["messages"][0]
            assert first["role"] == "system"
            return str(first["content"])
        return str(body["instructions"])

    def tool_names(self, body: dict[str, Any]) -> set[str]:
        return {t["function"]["name"] if self.chat else t["name"] for t in body["tools"]}

    def tool_outputs(self, body: dict[str, Any]) -> list[str]:
        if self.chat:
            return [_text(m["content"]) for m in body["messages"] if m["role"] == "tool"]
        return [
            _text(i["output"]) for i in body["input"] if i.get("type") == "function_call_output"
        ]

    def messages(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """(role, text) of the conversation's user and assistant messages."""
        items = body["messages"] if self.chat else body["input"]
        return [
            (item["role"], _text(item.get("content")))
            for item in items
            if item.get("role") in ("user", "assistant")
        ]


MODES = [pytest.param(Mode(chat=False), id="responses"), pytest.param(Mode(chat=True), id="chat")]


def _text(content: object) -> str:
    """Message content or tool output (a string or a list of parts) as text."""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


@pytest.fixture(autouse=True)
def no_trace_export() -> Iterator[None]:
    """Nothing here may export traces to OpenAI; restore the exporter's key afterwards."""
    exporter = default_exporter()
    key = exporter._api_key  # the SDK offers a setter, but no side-effect-free getter
    set_tracing_disabled(True)
    yield
    set_tracing_disabled(True)
    exporter._api_key = key


def settings_for(mock: OpenAIMock, mode: Mode) -> Settings:
    return Settings(
        openai_base_url=mock.base_url,
        openai_api_key="test",
        use_chat_completions=mode.chat,
        tracing=False,
        model_max_retries=0,
    )


async def run_turn(settings: Settings, text: str, session: StoreSession | None = None) -> str:
    """One streamed turn, drained to the end; returns the final output."""
    async with openai_client(settings) as client:
        agent = create_trip_planner_agent(settings, client)
        result = Runner.run_streamed(agent, text, session=session)
        async for _ in result.stream_events():
            pass
    return str(result.final_output)


@pytest.mark.parametrize("mode", MODES)
async def test_tool_call_round_trip(openai_mock: OpenAIMock, mode: Mode) -> None:
    before = date.today().isoformat()
    output = await run_turn(
        settings_for(openai_mock, mode), f"Portugal 20-30 Apr 2025? {HOLIDAYS_CALL} [tokens 2]"
    )

    assert output.startswith("Tool results:")
    assert "2025-04-25" in output
    assert len(openai_mock.requests) == 2
    first, second = (request.body for request in openai_mock.requests)
    assert all(request.path == mode.path for request in openai_mock.requests)
    instructions = mode.instructions(first)
    assert "Tripchat" in instructions
    assert before in instructions or date.today().isoformat() in instructions  # near midnight
    assert mode.tool_names(first) == TOOL_NAMES
    assert mode.tool_outputs(first) == []
    outputs = mode.tool_outputs(second)
    assert len(outputs) == 1 and "2025-04-25" in outputs[0]
    assert json.loads(outputs[0])  # the tool's compact JSON, not an "Error: ..." text


@pytest.mark.parametrize("mode", MODES)
async def test_session_memory_across_turns(
    openai_mock: OpenAIMock, store: SQLStore, db_url: str, mode: Mode
) -> None:
    settings = settings_for(openai_mock, mode)
    session = StoreSession("trip-1", store)
    first = await run_turn(settings, "Four days in Lisbon, please [tokens 3]", session)
    assert first == "w0 w1 w2 "
    await run_turn(settings, "Make it five [tokens 1]", session)

    turn_two = mode.messages(openai_mock.requests[-1].body)
    assert turn_two[0] == ("user", "Four days in Lisbon, please [tokens 3]")
    assert ("assistant", "w0 w1 w2 ") in turn_two
    assert turn_two[-1] == ("user", "Make it five [tokens 1]")

    items = await session.get_items()
    assert len(items) == 4  # two user messages, two assistant replies
    assert await StoreSession("another-trip", store).get_items() == []
    reopened = await open_store(db_url)
    try:
        assert await StoreSession("trip-1", reopened).get_items() == items
    finally:
        await reopened.close()


def _tracing_enabled() -> bool:
    return not isinstance(get_trace_provider().create_trace("probe"), NoOpTrace)


def test_configure_tracing_honours_settings() -> None:
    configure_tracing(Settings(openai_api_key="sk-trace", tracing=True))
    assert _tracing_enabled()
    assert default_exporter().api_key == "sk-trace"

    configure_tracing(Settings(openai_api_key="sk-trace", tracing=False))
    assert not _tracing_enabled()

    configure_tracing(Settings.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}))
    assert not _tracing_enabled()
