"""The lean model client streams exactly what the stock client does, on both model APIs."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseTextDeltaEvent
from openai_mock import OpenAIMock

from tripchat.modelclient import LeanOpenAI, lean_event

pytestmark = pytest.mark.anyio

PROMPT = "Plan it [tokens 30]"


async def _responses(client: openai.AsyncOpenAI) -> list[Any]:
    stream = await client.responses.create(model="gpt-4.1", input=PROMPT, stream=True)
    return [event async for event in stream]


async def _chat(client: openai.AsyncOpenAI) -> list[Any]:
    stream = await client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    return [chunk async for chunk in stream]


@pytest.mark.parametrize("api", [_responses, _chat], ids=["responses", "chat"])
async def test_the_lean_client_streams_the_same_typed_events(
    openai_mock: OpenAIMock, api: Any
) -> None:
    streams = []
    for cls in (openai.AsyncOpenAI, LeanOpenAI):
        async with cls(base_url=openai_mock.base_url, api_key="test", max_retries=0) as client:
            streams.append(await api(client))
    stock, lean = streams
    assert [type(e) for e in lean] == [type(e) for e in stock]
    dumped = [[e.model_dump(exclude={"id", "created"}) for e in s] for s in (stock, lean)]
    # Ids and timestamps differ per call; every other field, deltas included, is the same.
    for events in dumped:
        for event in events:
            for key in ("item_id", "response", "item"):
                event.pop(key, None)
    assert dumped[0] == dumped[1]
    assert len(lean) > 30


def test_unusual_events_take_the_sdks_path() -> None:
    delta = {
        "type": "response.output_text.delta",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "w0 ",
        "sequence_number": 3,
        "logprobs": [],
    }
    built = lean_event(delta, object)
    assert isinstance(built, ResponseTextDeltaEvent) and built.delta == "w0 "
    assert lean_event({**delta, "content_index": "first"}, object) is None  # does not validate
    assert lean_event({"type": "response.created", "response": {}}, object) is None
    assert lean_event({"object": "chat.completion.chunk"}, ChatCompletionChunk) is None


async def test_a_streaming_reply_lets_go_of_its_request_body_and_a_retry_resends_it(
    openai_mock: OpenAIMock,
) -> None:
    prompt = "Plan it [error-once 500] [tokens 5]"
    async with LeanOpenAI(base_url=openai_mock.base_url, api_key="test", max_retries=1) as client:
        stream = await client.responses.create(model="gpt-4.1", input=prompt, stream=True)
        # Held for as long as the reply streams: the body must not be (it can be large).
        assert stream.response.request.content == b""
        deltas = [e.delta async for e in stream if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(deltas) == "w0 w1 w2 w3 w4 "
    first, retry = [r.body for r in openai_mock.requests if r.body is not None]
    assert retry == first
    assert retry["input"] == prompt
