"""The lean per-run steps give the SDK's own results: the agents' run-state keys, and the
request bodies on the wire on both model APIs."""

from __future__ import annotations

import copy
from collections import OrderedDict, namedtuple
from types import MappingProxyType
from typing import Any

import pytest
from agents import Agent, handoff
from agents.models import openai_chatcompletions, openai_responses
from agents.run_internal import tool_use_tracker
from agents.sandbox import runtime_session_manager
from agents.util import _json
from openai_mock import OpenAIMock
from pydantic import BaseModel
from test_leanparams import _bodies

from tripchat import leanrun
from tripchat.agent import create_trip_planner_agent
from tripchat.config import Settings
from tripchat.modelclient import LeanOpenAI
from tripchat.ui_tools import with_chatkit_tools

pytestmark = pytest.mark.anyio


def trip_agent() -> Agent[Any]:
    settings = Settings(openai_api_key="test", tracing=False)
    return copy.copy(with_chatkit_tools(create_trip_planner_agent(settings)))


def graphs() -> list[Agent[Any]]:
    """A lone agent, and graphs the shortcut must leave to the SDK: handoffs (one to an
    agent of the same name, whose key is then ordered by its settings) and an agent tool."""
    lone = trip_agent()
    twin = Agent(name=lone.name, instructions="other")
    helper = Agent(name="Helper", instructions="helps", handoffs=[twin])
    with_handoffs = copy.copy(lone)
    with_handoffs.handoffs = [helper, handoff(twin)]
    with_tool = copy.copy(lone)
    with_tool.tools = [*lone.tools, helper.as_tool("helper", "asks the helper")]
    return [lone, with_handoffs, with_tool]


@pytest.mark.parametrize("agent", graphs(), ids=["lone", "handoffs", "agent-tool"])
def test_keys_are_the_sdks(agent: Agent[Any]) -> None:
    keys = leanrun.keys_by_id(agent)
    assert keys == leanrun.SDK_KEYS_BY_ID(agent)
    assert keys[id(agent)] == agent.name


def test_graph_with_twins_keeps_both() -> None:
    agent = graphs()[1]
    assert sorted(leanrun.keys_by_id(agent).values()) == [
        "Helper",
        "Trip planner",
        "Trip planner#2",
    ]


class Point(BaseModel):
    x: int = 1


Pair = namedtuple("Pair", "a b")


def test_dump_copies_as_the_sdk_does() -> None:
    odd: dict[str, Any] = {
        "tuple": (1, "a", None),
        "named": Pair(1.5, True),
        "ordered": OrderedDict(b=2, a=[{"c": 3}]),
        "proxy": MappingProxyType({"k": (4,)}),
        "set": {7},
        "model": Point(),
        "bytes": b"x",
        1: "an int key",
    }
    value = [{"type": "function", "parameters": {"properties": {"n": [1, 2.5]}}}, odd]
    dumped = leanrun.dump_compatible(value)
    assert dumped == _json._to_dump_compatible(value)
    assert dumped[1]["tuple"] == [1, "a", None] and dumped[1]["named"] == [1.5, True]
    dumped[0]["parameters"]["properties"]["n"].append(3)  # a copy: the SDK's tools stay
    assert value[0]["parameters"]["properties"]["n"] == [1, 2.5]


def test_install_reaches_every_runs_paths() -> None:
    leanrun.install()
    leanrun.install()
    for module in (tool_use_tracker, runtime_session_manager):
        assert vars(module)[leanrun.KEYS_NAME] is leanrun.keys_by_id
    for module in (openai_responses, openai_chatcompletions):
        assert vars(module)[leanrun.DUMP_NAME] is leanrun.dump_compatible


@pytest.mark.parametrize("chat", [False, True], ids=["responses", "chat"])
async def test_requests_on_the_wire_are_the_sdks(
    openai_mock: OpenAIMock, chat: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    leanrun.install()
    lean = await _bodies(LeanOpenAI, openai_mock, chat)
    openai_mock.reset()
    for module in (openai_responses, openai_chatcompletions):
        monkeypatch.setitem(vars(module), leanrun.DUMP_NAME, _json._to_dump_compatible)
    stock = await _bodies(LeanOpenAI, openai_mock, chat)
    assert len(stock) == 3  # a failed request, its retry, the one with the tool's output
    assert lean == stock
    assert b"trip_calendar" in lean[0]
