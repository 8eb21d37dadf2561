"""The run-state keys of an agent graph: the lean shortcut gives the SDK's own keys."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from agents import Agent, handoff
from agents.run_internal import tool_use_tracker
from agents.sandbox import runtime_session_manager

from tripchat import leanidentity
from tripchat.agent import create_trip_planner_agent
from tripchat.config import Settings
from tripchat.ui_tools import with_chatkit_tools


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
    keys = leanidentity.keys_by_id(agent)
    assert keys == leanidentity.SDK_KEYS_BY_ID(agent)
    assert keys[id(agent)] == agent.name


def test_graph_with_twins_keeps_both() -> None:
    agent = graphs()[1]
    assert sorted(leanidentity.keys_by_id(agent).values()) == [
        "Helper",
        "Trip planner",
        "Trip planner#2",
    ]


def test_install_reaches_the_runs_paths() -> None:
    leanidentity.install()
    leanidentity.install()
    for module in (tool_use_tracker, runtime_session_manager):
        assert vars(module)[leanidentity.NAME] is leanidentity.keys_by_id
