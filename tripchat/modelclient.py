"""The `openai` client with a lean parse of the model's streamed deltas.

A long reply is hundreds of small SSE events. The stock client builds each one with
`construct_type` against the union of every stream event type (about 50 µs an event,
a quarter of the server's CPU per reply). `LeanOpenAI` keeps the client's own stream loop
(errors, `[DONE]`, closing the response, retries) and, for the hot event types only, builds
the very class the Agents SDK expects by validating against that one class (about 3 µs).

Anything else (the response's start and end, unknown types, data that does not validate)
takes the SDK's path untouched. Both model APIs are covered: Responses delta events, and
Chat Completions chunks.
"""

from __future__ import annotations

from typing import Any

import httpx2
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import (
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseRefusalDeltaEvent,
    ResponseTextDeltaEvent,
)
from pydantic import BaseModel, ValidationError

HOT_EVENTS: dict[str, type[BaseModel]] = {
    "response.output_text.delta": ResponseTextDeltaEvent,
    "response.function_call_arguments.delta": ResponseFunctionCallArgumentsDeltaEvent,
    "response.refusal.delta": ResponseRefusalDeltaEvent,
    "response.reasoning_text.delta": ResponseReasoningTextDeltaEvent,
    "response.reasoning_summary_text.delta": ResponseReasoningSummaryTextDeltaEvent,
}
"""The Responses events sent once per token, by their `type`."""


def lean_event(data: object, cast_to: type[Any]) -> BaseModel | None:
    """`data` as the class the SDK would build for it, if it is a hot event; else None."""
    if type(data) is not dict:
        return None
    if cast_to is ChatCompletionChunk:
        model: type[BaseModel] | None = ChatCompletionChunk
    else:
        model = HOT_EVENTS.get(data.get("type"))  # type: ignore[arg-type]
    if model is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None  # the SDK's lenient construction decides what it is


class LeanOpenAI(AsyncOpenAI):
    """`AsyncOpenAI` that builds streamed deltas against their own class, not a union."""

    def _process_response_data(
        self, *, data: object, cast_to: type[Any], response: httpx2.Response
    ) -> Any:
        lean = lean_event(data, cast_to)
        if lean is not None:
            return lean
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)

    async def _process_response(self, *, response: httpx2.Response, **kwargs: Any) -> Any:
        if kwargs.get("stream"):
            release_body(response.request)
        return await super()._process_response(response=response, **kwargs)


def release_body(request: httpx2.Request) -> None:
    """Drop a sent request's body while its response streams on.

    The response keeps its request, and the body (instructions, tools and the history
    sent) would stay in memory for as long as the reply streams: about 10 KB for a first
    message, tens of KB with a long history, per reply in flight. A retry builds a new
    request from the options, so nothing needs it once the response has begun.
    """
    if isinstance(request.stream, httpx2.ByteStream):
        request.stream._stream = b""  # the transport's own request shares this stream
    request._content = b""
