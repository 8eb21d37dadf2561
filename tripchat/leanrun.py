"""Two steps of the Agents SDK's per-run set-up, done for less where their work is moot.

* **Agent identity keys.** Every run names the agents reachable from its starting agent,
  so that a saved run state can find them again: once when the run's sandbox runtime is
  set up and again for the tool-use snapshot at the end of each model turn. To order
  agents that share a name, it serialises each agent whole (every tool, the model
  settings) to JSON, even when a name has one agent: ≈0.36 ms each time for the trip
  planner, 7.7% of a 20-delta turn's CPU. An agent with no handoffs and no agent-as-tool
  is the whole graph, and its key is its name whatever that ordering says; only that case
  is answered here.
* **Request payload copies.** Before every model call the model classes copy the tool
  params and the input (Chat Completions: the messages and tools) into plain lists and
  dicts, testing every value against `Mapping` and `Iterable` ABCs: ≈0.8 ms a request for
  the trip planner's tools, 2-3% of a turn. `dump_compatible` copies dicts, lists, tuples
  and JSON scalars by their exact type and hands any other value to the SDK's own function,
  whose result for a value does not depend on where it sits: the same copy.

Anything else takes the SDK's own functions; `install` rebinds the names the SDK's
modules imported, once per process.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from agents import Agent
from agents import _run_state_agent_identity as identity
from agents.models import openai_chatcompletions, openai_responses
from agents.run_internal import tool_use_tracker
from agents.sandbox import runtime_session_manager
from agents.util import _json

KEYS_NAME = "_build_agent_identity_keys_by_id"
SDK_KEYS_BY_ID = identity._build_agent_identity_keys_by_id
DUMP_NAME = "_to_dump_compatible"
SDK_DUMP = _json._to_dump_compatible_internal
_SCALARS = frozenset({str, int, float, bool, type(None)})


def keys_by_id(initial_agent: Agent[Any]) -> dict[int, str]:
    """`_build_agent_identity_keys_by_id`: `{id(agent): name}` for a lone agent, else the SDK's."""
    tools = getattr(initial_agent, "tools", None) or ()
    if initial_agent.handoffs or any(getattr(t, "_is_agent_tool", False) for t in tools):
        return SDK_KEYS_BY_ID(initial_agent)
    return {id(initial_agent): initial_agent.name}


def dump_compatible(value: Any) -> Any:
    """`_to_dump_compatible`: dicts and lists copied, tuples made lists, scalars kept."""
    kind = type(value)
    if kind is dict:
        return {key: dump_compatible(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [dump_compatible(item) for item in value]
    if kind in _SCALARS:
        return value
    return SDK_DUMP(value)


def _rebind(module: ModuleType, name: str, sdk: object, lean: object) -> None:
    names = vars(module)
    if names.get(name) is sdk:  # idempotent; another patch is left alone
        names[name] = lean


def install() -> None:
    """Use the lean functions where every run calls them."""
    for module in (tool_use_tracker, runtime_session_manager):
        _rebind(module, KEYS_NAME, SDK_KEYS_BY_ID, keys_by_id)
    for module in (openai_responses, openai_chatcompletions):
        _rebind(module, DUMP_NAME, _json._to_dump_compatible, dump_compatible)
