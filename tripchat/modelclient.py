"""The `openai` client, lean where a model call spends its CPU and the SDK's work is moot.

A long reply is hundreds of small SSE events, and a short one is dominated by per-request
work. `LeanOpenAI` keeps the client's own request and stream loops (errors, `[DONE]`,
closing the response, retries) and changes three steps, each falling back to the SDK's own:

* splitting the model's stream into events: a block at a time (`leansse`);
* parsing a streamed event: by its `type`, not against the union of every event type
  (`leanevents`), handing the Agents SDK the very types it expects;
* building the request body: plain-JSON parameters skip the client's transform, which
  could not change them (`leanparams`).

Both model APIs are covered: Responses, and Chat Completions.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import httpx2
from openai import AsyncOpenAI
from openai._models import FinalRequestOptions
from openai._streaming import SSEBytesDecoder, SSEDecoder
from openai.resources.chat import AsyncChat
from openai.resources.responses import AsyncResponses

from .leanevents import lean_event
from .leanparams import LeanChat, LeanResponses, carried_out
from .leansse import LeanSSEDecoder


class LeanOpenAI(AsyncOpenAI):
    """`AsyncOpenAI` that builds streamed events by their tag, not against a union, and
    sends plain-JSON request parameters without transforming them."""

    @cached_property
    def responses(self) -> AsyncResponses:
        """`LeanResponses` on this client."""
        return LeanResponses(self)

    @cached_property
    def chat(self) -> AsyncChat:
        """`LeanChat` on this client."""
        return LeanChat(self)

    async def _prepare_options(self, options: FinalRequestOptions) -> FinalRequestOptions:
        """The SDK's options for one attempt, the carried parameters out of their boxes."""
        options = await super()._prepare_options(options)
        body = carried_out(options.json_data)
        if body is not options.json_data:
            options = options.model_copy(update={"json_data": body})
        return options

    def _make_sse_decoder(self) -> SSEDecoder | SSEBytesDecoder:
        return LeanSSEDecoder()

    def _process_response_data(
        self, *, data: object, cast_to: type[Any], response: httpx2.Response
    ) -> Any:
        lean = lean_event(data, cast_to)
        if lean is not None:
            return lean
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)

    async def _process_response(
        self, *, response: httpx2.Response, options: FinalRequestOptions, **kwargs: Any
    ) -> Any:
        if kwargs.get("stream"):
            release_body(response.request, options)
        return await super()._process_response(response=response, options=options, **kwargs)


def release_body(request: httpx2.Request, options: FinalRequestOptions) -> None:
    """Drop a sent request's body, and the parameters it was made of, while its response
    streams on.

    The response keeps its request, and the body (instructions, tools and the history
    sent) would stay in memory for as long as the reply streams: about 10 KB for a first
    message, tens of KB with a long history, per reply in flight. The response and its
    stream also keep this attempt's options, whose `json_data` holds the parameters: the
    Agents SDK's dump-ready copies of the tools and the input (another 5-15 KB). A retry
    is a new attempt built from the caller's options, and the stream reads only the
    options' parsing settings, so nothing needs either once the response has begun.
    """
    if isinstance(request.stream, httpx2.ByteStream):
        request.stream._stream = b""  # the transport's own request shares this stream
    request._content = b""
    options.json_data = None
