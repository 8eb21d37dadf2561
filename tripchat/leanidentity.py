"""The Agents SDK's agent identity keys, without their cost when a run has one agent.

Every run names the agents reachable from its starting agent, so that a saved run state
can find them again: once when the run's sandbox runtime is set up and again for the
tool-use snapshot at the end of each model turn. To order agents that share a name, it
serialises each agent whole (every tool, the model settings) to JSON, and it does so even
when a name has one agent: ≈0.36 ms each time for the trip planner, 7.7% of a 20-delta
turn's CPU. An agent with no handoffs and no agent-as-tool is the whole graph, and its key
is its name whatever that ordering says; only that case is answered here. Any other graph
takes the SDK's own function.
"""

from __future__ import annotations

from typing import Any

from agents import Agent
from agents import _run_state_agent_identity as identity
from agents.run_internal import tool_use_tracker
from agents.sandbox import runtime_session_manager

NAME = "_build_agent_identity_keys_by_id"
SDK_KEYS_BY_ID = identity._build_agent_identity_keys_by_id


def keys_by_id(initial_agent: Agent[Any]) -> dict[int, str]:
    """`_build_agent_identity_keys_by_id`: `{id(agent): name}` for a lone agent, else the SDK's."""
    tools = getattr(initial_agent, "tools", None) or ()
    if initial_agent.handoffs or any(getattr(t, "_is_agent_tool", False) for t in tools):
        return SDK_KEYS_BY_ID(initial_agent)
    return {id(initial_agent): initial_agent.name}


def install() -> None:
    """Use `keys_by_id` where every run builds the keys: the two modules that bound the
    SDK's function by name (idempotent; another patch is left alone)."""
    for module in (tool_use_tracker, runtime_session_manager):
        names = vars(module)
        if names.get(NAME) is SDK_KEYS_BY_ID:
            names[NAME] = keys_by_id
