"""The lean model client streams exactly what the stock client does, on both model APIs."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import (
    ResponseCreatedEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)
from openai_mock import OpenAIMock
from pydantic import BaseModel

from tripchat.leanevents import lean_event
from tripchat.modelclient import LeanOpenAI

pytestmark = pytest.mark.anyio

PROMPT = "Plan it [tokens 30]"
CALL = '[call local_time {"place": "Lisbon"}]'
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "local_time",
        "parameters": {"type": "object", "properties": {"place": {"type": "string"}}},
        "strict": False,
    },
    {"type": "web_search"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
]
VARYING = {"id", "created", "created_at", "completed_at", "item_id", "call_id"}


async def _responses(client: openai.AsyncOpenAI, prompt: str) -> list[Any]:
    stream = await client.responses.create(model="gpt-4.1", input=prompt, tools=TOOLS, stream=True)
    return [event async for event in stream]


async def _chat(client: openai.AsyncOpenAI, prompt: str) -> list[Any]:
    stream = await client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": prompt}],
        tools=[{"type": "function", "function": {"name": "local_time", "parameters": {}}}],
        stream=True,
    )
    return [chunk async for chunk in stream]


def _shape(value: Any) -> Any:
    """Classes, the fields set and their values, all the way down; per-call ids left out."""
    if isinstance(value, BaseModel):
        fields = {
            name: _shape(getattr(value, name))
            for name in sorted(value.model_fields_set)
            if name not in VARYING
        }
        return type(value).__name__, fields, value.model_extra
    if isinstance(value, list):
        return [_shape(item) for item in value]
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items() if key not in VARYING}
    return value


@pytest.mark.parametrize("prompt", [PROMPT, CALL], ids=["text", "tool-call"])
@pytest.mark.parametrize("api", [_responses, _chat], ids=["responses", "chat"])
async def test_the_lean_client_streams_the_same_typed_events(
    openai_mock: OpenAIMock, api: Any, prompt: str
) -> None:
    streams = []
    for cls in (openai.AsyncOpenAI, LeanOpenAI):
        async with cls(base_url=openai_mock.base_url, api_key="test", max_retries=0) as client:
            streams.append(await api(client, prompt))
    stock, lean = streams
    assert [_shape(e) for e in lean] == [_shape(e) for e in stock]
    assert len(lean) > (30 if prompt == PROMPT else 3)
    if api is _responses:  # the echoed tools are built as their own classes
        kinds = [type(t).__name__ for t in lean[0].response.tools]
        assert kinds == ["FunctionTool", "WebSearchTool", "FileSearchTool"]


DELTA = {
    "type": "response.output_text.delta",
    "item_id": "msg_1",
    "output_index": 0,
    "content_index": 0,
    "delta": "w0 ",
    "sequence_number": 3,
    "logprobs": [],
}
CREATED = {
    "type": "response.created",
    "sequence_number": 0,
    "response": {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "in_progress",
        "model": "gpt-4.1",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": TOOLS,
    },
}


def test_events_are_built_by_their_type() -> None:
    built = lean_event(DELTA, ResponseStreamEvent)
    assert isinstance(built, ResponseTextDeltaEvent) and built.delta == "w0 "
    created = lean_event(CREATED, ResponseStreamEvent)
    assert isinstance(created, ResponseCreatedEvent)
    assert created.response.tools[2].vector_store_ids == ["vs_1"]  # type: ignore[union-attr]


def test_unusual_events_take_the_sdks_path() -> None:
    def created_with(tool: dict[str, Any]) -> dict[str, Any]:
        return {**CREATED, "response": {**CREATED["response"], "tools": [*TOOLS, tool]}}

    assert lean_event(DELTA, object) is None  # not a model stream
    assert lean_event({**DELTA, "content_index": "first"}, ResponseStreamEvent) is None
    assert lean_event({**DELTA, "type": "response.new_kind"}, ResponseStreamEvent) is None
    assert lean_event(created_with({"type": "teleport"}), ResponseStreamEvent) is None
    assert lean_event(created_with({"name": "untagged"}), ResponseStreamEvent) is None
    assert lean_event({"type": "response.created", "response": {}}, ResponseStreamEvent) is None
    assert lean_event({"object": "chat.completion.chunk"}, ChatCompletionChunk) is None


async def test_a_streaming_reply_lets_go_of_its_request_body_and_a_retry_resends_it(
    openai_mock: OpenAIMock,
) -> None:
    prompt = "Plan it [error-once 500] [tokens 5]"
    async with LeanOpenAI(base_url=openai_mock.base_url, api_key="test", max_retries=1) as client:
        stream = await client.responses.create(model="gpt-4.1", input=prompt, stream=True)
        # Held for as long as the reply streams: the body must not be (it can be large),
        # nor the parameters it was made of.
        assert stream.response.request.content == b""
        assert stream._options is not None and stream._options.json_data is None
        deltas = [e.delta async for e in stream if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(deltas) == "w0 w1 w2 w3 w4 "
    first, retry = [r.body for r in openai_mock.requests if r.body is not None]
    assert retry == first
    assert retry["input"] == prompt


async def test_the_agents_sdks_raw_stream_lets_go_of_its_parameters(
    openai_mock: OpenAIMock,
) -> None:
    """The Agents SDK streams through `with_streaming_response` and keeps that response
    (and its options) until the reply ends: the tools and the input must not stay with it."""
    tools = [{"type": "function", "name": "plan", "parameters": {"type": "object"}}]
    async with LeanOpenAI(base_url=openai_mock.base_url, api_key="test") as client:
        create = client.responses.with_streaming_response.create
        async with create(model="gpt-4.1", input="[tokens 3]", tools=tools, stream=True) as raw:
            stream = await raw.parse()
            assert raw._options.json_data is None
            deltas = [e.delta async for e in stream if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(deltas) == "w0 w1 w2 "
    assert openai_mock.requests[-1].body is not None
    assert openai_mock.requests[-1].body["tools"][0]["name"] == "plan"
