"""The model's SSE stream split into events a block at a time, not a line at a time.

The `openai` client's decoder runs a regex over every chunk, copies each line through a
bytearray, decodes it and dispatches it in Python: several generator levels per line, two
or three lines per event, hundreds of events per reply. A model stream is nearly always
the same shape: `\\n` line ends, events of one `data:` line (Chat Completions) or an
`event:` line and a `data:` line (Responses), each event arriving whole.

`LeanSSEDecoder` splits what has arrived at the blank lines and builds those two shapes
directly; any other block goes through the SDK's own line decoding, and a stream that uses
`\\r` line ends, or an event that grows past `MAX_PENDING` bytes before its blank line,
is handed to the SDK's decoder whole from that point on. Only complete events are
decoded here, so the SDK's decoder always takes over between two events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from openai._streaming import ServerSentEvent, SSEDecoder

MAX_PENDING = 64 * 1024
"""Past this, an unfinished event is left to the SDK's decoder (which never re-copies)."""


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


class LeanSSEDecoder(SSEDecoder):
    """`SSEDecoder` that decodes the common event shapes a whole block at a time."""

    def _block(self, text: str) -> list[ServerSentEvent]:
        """The events one block (its lines, without the blank line that ends it) dispatches."""
        if "\n" not in text:
            if text.startswith("data: "):
                return [ServerSentEvent(data=text[6:], id=self._last_event_id)]
        elif text.startswith("event: "):
            first, _, rest = text.partition("\n")
            if rest.startswith("data: ") and "\n" not in rest:
                return [ServerSentEvent(event=first[7:], data=rest[6:], id=self._last_event_id)]
        return [sse for line in [*text.split("\n"), ""] if (sse := self.decode(line))]

    async def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
        """Every event in the stream, as the SDK's decoder would yield it."""
        pending = b""
        async for chunk in iterator:
            data = pending + chunk if pending else chunk
            end = data.rfind(b"\n\n")
            if b"\r" in data or (end < 0 and len(data) > MAX_PENDING):
                async for sse in super().aiter_bytes(_chain(data, iterator)):
                    yield sse
                return
            if end < 0:
                pending = data
                continue
            pending = data[end + 2 :]
            for block in data[:end].split(b"\n\n"):
                for sse in self._block(block.decode("utf-8")):
                    yield sse
        async for sse in super().aiter_bytes(_chain(pending, _nothing())):
            yield sse
