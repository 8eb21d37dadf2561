"""Fewer, larger text deltas when the reader falls behind the model.

The Agents SDK queues each model event for its reader. When the model streams faster than
a reply is written (a busy process), text deltas pile up in that queue; every one of them
would then cost a ChatKit event (validated, saved in the pending item, serialised, framed,
written). `coalesced` merges the deltas *already waiting* into one, so the text and its
order are unchanged, an idle server still streams each delta as it comes, and a busy one
spends its CPU per write rather than per token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from agents import RunResultStreaming, StreamEvent
from agents.stream_events import RawResponsesStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

MAX_MERGED_CHARS = 8_192
"""A merged delta stays a reasonable write (and a reasonable event for the browser)."""


def _text_delta(event: StreamEvent) -> ResponseTextDeltaEvent | None:
    """The plain text delta an event carries (no logprobs); None for anything else."""
    if isinstance(event, RawResponsesStreamEvent):
        data = event.data
        if isinstance(data, ResponseTextDeltaEvent) and not data.logprobs:
            return data
    return None


def _merge(first: ResponseTextDeltaEvent, text: str) -> RawResponsesStreamEvent:
    """`first` carrying all the merged text (a copy: openai's `construct` costs ~50 µs)."""
    return RawResponsesStreamEvent(data=first.model_copy(update={"delta": text}))


class Coalesced:
    """`result.stream_events()`, with text deltas of one part that were already queued merged.

    It only looks ahead while the run's queue holds events, so it never waits for a delta
    that has not arrived; without that queue (another SDK version) it passes through. An
    iterator class, not a generator: ChatKit abandons its pending `__anext__` when the client
    leaves, and a generator collected mid-`await` would report an error at shutdown.
    """

    def __init__(self, result: RunResultStreaming) -> None:
        self._events = result.stream_events()
        queue: Any = getattr(result, "_event_queue", None)
        self._waiting: Callable[[], bool] = (
            (lambda: not queue.empty()) if hasattr(queue, "empty") else (lambda: False)
        )
        self._held: StreamEvent | None = None

    def __aiter__(self) -> Coalesced:
        return self

    async def __anext__(self) -> StreamEvent:
        event, self._held = self._held, None
        if event is None:
            event = await self._events.__anext__()
        first = _text_delta(event)
        if first is None:
            return event
        parts = [first.delta]
        size = len(first.delta)
        while size < MAX_MERGED_CHARS and self._waiting():
            try:
                following = await self._events.__anext__()
            except StopAsyncIteration:
                break
            more = _text_delta(following)
            if more is None or (more.item_id, more.content_index) != (
                first.item_id,
                first.content_index,
            ):
                self._held = following
                break
            parts.append(more.delta)
            size += len(more.delta)
        return event if len(parts) == 1 else _merge(first, "".join(parts))


class _CoalescedRun:
    """A run whose `stream_events` is `coalesced`; everything else is the run's own."""

    def __init__(self, result: RunResultStreaming) -> None:
        self._result = result

    def stream_events(self) -> AsyncIterator[StreamEvent]:
        return Coalesced(self._result)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)


def coalescing(result: RunResultStreaming) -> RunResultStreaming:
    """`result` as ChatKit's `stream_agent_response` takes it, its text deltas coalesced."""
    return cast(RunResultStreaming, _CoalescedRun(result))
