"""The lean SSE decoder yields exactly the SDK decoder's events, however the bytes arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai._streaming import SSEDecoder

from tripchat.leansse import MAX_PENDING, LeanSSEDecoder

pytestmark = pytest.mark.anyio

STREAMS = [
    # Responses: an event line and a data line per event
    b'event: response.created\ndata: {"a": 1}\n\n'
    b'event: response.output_text.delta\ndata: {"delta": "w0 \xc3\xa9"}\n\n',
    # Chat Completions: data lines only, then [DONE]
    b'data: {"choices": []}\n\ndata: {"x": ": y"}\n\ndata: [DONE]\n\n',
    # comments, ids, retry, multi-line data, a field without a space, unknown fields
    b": keep-alive\n\nid: 7\nretry: 150\ndata:one\ndata: two\n\nevent: e\nfoo: bar\ndata: x\n\n"
    b"data: after id\n\n\n\nevent: only-an-event\n\n",
    # CRLF and bare CR line ends (handed to the SDK's decoder)
    b'data: {"a": 1}\r\n\r\nevent: e\rdata: 2\r\r',
    # an event that never gets its blank line, and one that ends in a single newline
    b"data: done\n\ndata: cut off",
    b"data: done\n\ndata: one newline\n",
    b"\n\n\ndata: leading blank lines\n\n",
]


async def _chunks(stream: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(stream), size):
        yield stream[start : start + size]


async def _events(decoder: SSEDecoder, stream: bytes, size: int) -> list[tuple[object, ...]]:
    return [
        (sse.event, sse.data, sse.id, sse.retry)
        async for sse in decoder.aiter_bytes(_chunks(stream, size))
    ]


@pytest.mark.parametrize("stream", STREAMS)
async def test_every_split_yields_the_sdks_events(stream: bytes) -> None:
    expected = await _events(SSEDecoder(), stream, len(stream))
    assert expected  # each stream carries events
    for size in range(1, len(stream) + 1):
        assert await _events(LeanSSEDecoder(), stream, size) == expected, size


async def test_an_event_longer_than_the_pending_limit_is_decoded_whole() -> None:
    big = b"data: " + b"x" * (3 * MAX_PENDING) + b"\n\ndata: next\n\n"
    events = await _events(LeanSSEDecoder(), big, 4096)
    assert events == await _events(SSEDecoder(), big, 4096)
    assert [len(e[1]) for e in events] == [3 * MAX_PENDING, 4]  # type: ignore[arg-type]


async def test_broken_utf8_fails_as_in_the_sdk() -> None:
    with pytest.raises(UnicodeDecodeError):
        await _events(LeanSSEDecoder(), b"data: \xff\n\n", 64)
