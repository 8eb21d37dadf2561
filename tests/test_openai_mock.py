"""The OpenAI mock speaks the API well enough for the real openai and Agents SDKs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import agents
import anyio
import httpx
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
)
from openai.types.responses import ResponseStreamEvent
from openai_mock import OpenAIMock, RecordedRequest, parse_directives
from pydantic import TypeAdapter

pytestmark = pytest.mark.anyio
agents.set_tracing_disabled(True)

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 3,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
async def client(openai_mock: OpenAIMock) -> AsyncIterator[openai.AsyncOpenAI]:
    """A real client that validates every payload strictly against the SDK's types."""
    async with openai.AsyncOpenAI(
        base_url=openai_mock.base_url,
        api_key="test",
        max_retries=0,
        _strict_response_validation=True,
    ) as real_client:
        yield real_client


async def settled(mock: OpenAIMock, count: int) -> list[RecordedRequest]:
    """Wait until count requests are fully handled: the server side finishes asynchronously."""
    with anyio.fail_after(5):
        while len(mock.requests) < count or not all(r.done for r in mock.requests):
            await anyio.sleep(0.01)
    return mock.requests


@function_tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_directives_parse_and_bad_ones_are_ignored() -> None:
    parsed = parse_directives(
        'x [call add {"a": 2, "note": "]"}] [call ping] [tokens 4] [delay 0.5] '
        "[stall 1.5] [stall-before 2] [error 429] [error-once 503] [cut-after 3] [fail-after 0]"
    )
    assert parsed.calls == (("add", '{"a": 2, "note": "]"}'), ("ping", "{}"))
    assert (parsed.tokens, parsed.delay, parsed.stall, parsed.stall_before) == (4, 0.5, 1.5, 2.0)
    assert (parsed.error, parsed.error_once) == (429, 503)
    assert (parsed.cut_after, parsed.fail_after) == (3, 0)
    junk = parse_directives(
        "[call] [call add {bad] [call add [1]] [tokens -1] [tokens ²] [delay nan] "
        "[stall inf] [error 99] [error 600] [cut-after -1] [fail-after x] "
        "[call deep " + '{"a": ' * 50_000 + "]"
    )
    assert junk == parse_directives("nothing here")


async def test_streamed_responses_text(client: openai.AsyncOpenAI, openai_mock: OpenAIMock) -> None:
    stream = await client.responses.create(model="gpt-4.1", input="hi [tokens 3]", stream=True)
    events = [event async for event in stream]

    assert [e.type for e in events] == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "w0 w1 w2 "
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == "w0 w1 w2 "
    assert final.response.usage is not None and final.response.usage.output_tokens == 3
    (record,) = await settled(openai_mock, 1)
    assert (record.path, record.status, record.deltas_sent, record.disconnected) == (
        "/v1/responses",
        200,
        3,
        False,
    )


async def test_raw_events_validate_and_ids_are_unique(openai_mock: OpenAIMock) -> None:
    seen_ids: list[str] = []
    async with httpx.AsyncClient(base_url=openai_mock.base_url) as http:
        for text in ('[call add {"a": 1, "b": 2}] [call add {"a": 3, "b": 4}]', "hi"):
            response = await http.post("/responses", json={"input": text, "stream": True})
            assert response.headers["content-type"].startswith("text/event-stream")
            for block in response.text.strip().split("\n\n"):
                event_line, data_line = block.split("\n")
                event = STREAM_EVENT.validate_json(data_line.removeprefix("data: "))
                assert event_line == f"event: {event.type}"
                if event.type == "response.output_item.done":
                    seen_ids.append(event.item.id or "")
                    if event.item.type == "function_call":
                        seen_ids.append(event.item.call_id)
                        assert json.loads(event.item.arguments)["a"] in (1, 3)
                if event.type == "response.completed":
                    seen_ids.append(event.response.id)
    prefixes = sorted(i.split("_")[0] for i in seen_ids)
    assert prefixes == ["call", "call", "fc", "fc", "msg", "resp", "resp"]
    assert len(set(seen_ids)) == len(seen_ids)


async def test_whole_responses_and_chat(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="gpt-4.1", input="[tokens 2]")
    assert response.output_text == "w0 w1 "
    completion = await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": '[call add {"a": 1}]'}]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.arguments == '{"a": 1}'  # type: ignore[union-attr]


async def test_streamed_chat_chunks_and_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "hello [tokens 4]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 "
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


async def test_agent_runs_tool_over_responses(
    client: openai.AsyncOpenAI, openai_mock: OpenAIMock
) -> None:
    agent = Agent(
        name="calculator",
        instructions="Add numbers.",
        tools=[add],
        model=OpenAIResponsesModel(model="gpt-4.1", openai_client=client),
    )
    result = Runner.run_streamed(agent, 'please [call add {"a": 2, "b": 3}]')
    async for _ in result.stream_events():
        pass

    assert str(result.final_output).startswith("Tool results: 5\nw0 w1 ")
    first, second = await settled(openai_mock, 2)
    assert not first.disconnected and not second.disconnected
    assert first.body["tools"][0]["name"] == "add"
    outputs = [i for i in second.body["input"] if i.get("type") == "function_call_output"]
    assert [o["output"] for o in outputs] == ["5"]
    assert second.deltas_sent == 21


async def test_agent_runs_tool_over_chat_completions(
    client: openai.AsyncOpenAI, openai_mock: OpenAIMock
) -> None:
    agent = Agent(
        name="calculator",
        instructions="Add numbers.",
        tools=[add],
        model=OpenAIChatCompletionsModel(model="gpt-4.1", openai_client=client),
        model_settings=ModelSettings(include_usage=True),
    )
    result = Runner.run_streamed(agent, 'please [call add {"a": 2, "b": 3}] [tokens 2]')
    async for _ in result.stream_events():
        pass

    assert result.final_output == "Tool results: 5\nw0 w1 "
    assert result.context_wrapper.usage.output_tokens > 0
    first, second = await settled(openai_mock, 2)
    assert first.path == second.path == "/v1/chat/completions"
    assert first.stream and second.stream and not second.disconnected
    tool_messages = [m for m in second.body["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["5"]


async def test_rate_limit_and_error_once(
    client: openai.AsyncOpenAI, openai_mock: OpenAIMock
) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        await client.responses.create(model="gpt-4.1", input="[error 429]", stream=True)
    assert raised.value.response.headers["retry-after"] == "0"
    assert raised.value.code == "rate_limit_exceeded"

    retrying = client.with_options(max_retries=2)
    response = await retrying.responses.create(model="gpt-4.1", input="once [error-once 500]")
    assert response.output_text.startswith("w0 ")
    again = await client.responses.create(model="gpt-4.1", input="once [error-once 500]")
    assert again.output_text.startswith("w0 ")
    assert [r.status for r in await settled(openai_mock, 4)] == [429, 500, 200, 200]


async def test_client_disconnect_is_recorded(openai_mock: OpenAIMock) -> None:
    body = {"input": "long [tokens 500] [delay 0.01]", "stream": True}
    received = 0
    async with (
        httpx.AsyncClient(base_url=openai_mock.base_url) as http,
        http.stream("POST", "/responses", json=body) as response,
    ):
        async for line in response.aiter_lines():
            received += line.startswith("event: response.output_text.delta")
            if received == 3:
                break
    (record,) = await settled(openai_mock, 1)
    assert record.disconnected
    assert 3 <= record.deltas_sent < 50


async def test_stalls_trip_client_timeouts(openai_mock: OpenAIMock) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_mock.base_url, api_key="test", max_retries=0, timeout=0.5
    ) as impatient:
        stream = await impatient.responses.create(model="gpt-4.1", input="[stall 30]", stream=True)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            async for _ in stream:
                pass
        with pytest.raises(openai.APITimeoutError):
            await impatient.responses.create(model="gpt-4.1", input="[stall-before 30]")
        records = await settled(openai_mock, 2)
        assert time.monotonic() - started < 3
        assert all(r.disconnected for r in records)

        openai_mock.reset()
        stream = await impatient.responses.create(model="gpt-4.1", input="[stall 0.2]", stream=True)
        assert [event.type async for event in stream][-1] == "response.completed"


async def _texts_until_failure(
    client: openai.AsyncOpenAI, chat: bool, text: str
) -> tuple[str, BaseException]:
    """The text a streamed reply got out, and what ended it (it must not complete)."""
    got: list[str] = []
    with pytest.raises((openai.APIError, agents.exceptions.ModelBehaviorError)) as raised:
        if chat:
            messages: Any = [{"role": "user", "content": text}]
            chunks = await client.chat.completions.create(
                model="gpt-4.1", messages=messages, stream=True
            )
            async for chunk in chunks:
                got += [c.delta.content or "" for c in chunk.choices]
        else:
            stream = await client.responses.create(model="gpt-4.1", input=text, stream=True)
            async for event in stream:
                assert event.type not in ("response.completed", "response.output_text.done")
                if event.type == "response.output_text.delta":
                    got.append(event.delta)
                elif event.type == "response.failed":
                    assert event.response.error is not None
                    raise agents.exceptions.ModelBehaviorError(event.response.error.message)
    return "".join(got), raised.value


@pytest.mark.parametrize("chat", [False, True], ids=["responses", "chat"])
async def test_replies_stall_cut_and_fail_mid_text(openai_mock: OpenAIMock, chat: bool) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_mock.base_url, api_key="test", max_retries=0, timeout=0.5
    ) as impatient:
        stalled = await _texts_until_failure(impatient, chat, "[tokens 3] [stall 30]")
        cut = await _texts_until_failure(impatient, chat, "[tokens 9] [cut-after 2] [delay 0.01]")
        failed = await _texts_until_failure(impatient, chat, "[tokens 9] [fail-after 4]")
    assert stalled[0] == "w0 w1 w2 " and isinstance(stalled[1], openai.APITimeoutError)
    assert cut[0] == "w0 w1 " and isinstance(cut[1], openai.APIConnectionError)
    assert failed[0] == "w0 w1 w2 w3 " and "mid-stream failure" in str(failed[1])
    records = await settled(openai_mock, 3)
    assert [r.deltas_sent for r in records] == [3, 2, 4]
    assert [r.disconnected for r in records] == [True, False, False]


async def test_unknown_paths_get_openai_style_404(openai_mock: OpenAIMock) -> None:
    async with httpx.AsyncClient(base_url=openai_mock.base_url) as http:
        response = await http.get("/models")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_hundreds_of_concurrent_streams(
    client: openai.AsyncOpenAI, openai_mock: OpenAIMock
) -> None:
    texts: list[str] = []

    async def converse(index: int) -> None:
        stream = await client.responses.create(
            model="gpt-4.1", input=f"user {index} [tokens 10] [delay 0.01]", stream=True
        )
        texts.append(
            "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
        )

    with anyio.fail_after(30):  # a bound against a hang (8 s ran out on a busy machine)
        async with anyio.create_task_group() as group:
            for index in range(200):
                group.start_soon(converse, index)
    assert texts == ["w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 "] * 200
    assert not any(r.disconnected for r in await settled(openai_mock, 200))


def test_process_mode() -> None:
    script = Path(__file__).with_name("openai_mock.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--tokens", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("OPENAI_BASE_URL=http://127.0.0.1:")
        base_url = line.split("=", 1)[1]
        with httpx.Client(base_url=base_url) as http:
            reply: dict[str, Any] = http.post("/responses", json={"input": "hi"}).json()
            assert reply["output"][0]["content"][0]["text"] == "w0 w1 w2 "
            root = base_url.removesuffix("/v1")
            recorded = http.get(f"{root}/_mock/requests").json()
            assert [(r["path"], r["status"], r["done"]) for r in recorded] == [
                ("/v1/responses", 200, True)
            ]
            http.post(f"{root}/_mock/reset")
            assert http.get(f"{root}/_mock/requests").json() == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
