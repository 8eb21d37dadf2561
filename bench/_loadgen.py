"""A cheap ChatKit load generator: one keep-alive HTTP/1.1 connection per conversation on
an asyncio Protocol, requests built as bytes, replies read whole and only the events a
check needs parsed.

httpx spends about as much CPU per turn as the OpenAI mock does; on a 2-core machine that
is CPU the servers under test would use, so a bench of one serving process against two
drives them with this instead. Every turn is still checked: status 200, no `error`
event, and the assistant message saved (`thread.item.done`) with exactly the mock's text.
A chunked reply is taken as it arrives (the kernel's reads, not a read per chunk) and
ends at the zero-length chunk: SSE data is JSON on `data:` lines, which cannot hold the
`\\r\\n0\\r\\n\\r\\n` that ends it. Its events are found in the body with the chunk sizes
left in: text deltas are counted by their tag, the few events a check reads are cut
from their `data:` to their blank line (a chunk size inside one would fail its JSON,
and so the turn, rather than pass it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field

from chatkit_client import TEXT_DELTA, add_message, create_thread, encode

TEXT_DELTA_TAG = f'"{TEXT_DELTA}"'.encode()
CHECKED = (b'"thread.item.done"', b'"thread.created"', b'"error"')
CHUNKED_END = b"\r\n0\r\n\r\n"


@dataclass
class Tally:
    """What the conversations saw: when each turn ended, the turns that failed and the
    text-delta events received."""

    ended: list[float] = field(default_factory=list)
    failed: int = 0
    delta_events: int = 0

    def turns_between(self, start: float, end: float) -> int:
        return sum(start < t <= end for t in self.ended)


def mock_text(deltas: int) -> str:
    """The reply tests/openai_mock.py writes for `[tokens N]`."""
    return "".join(f"w{i} " for i in range(deltas))


def request(host: str, port: int, user: str, body: bytes) -> bytes:
    head = (
        f"POST /chatkit HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"x-user-id: {user}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive connection: `exchange` sends a request and returns its whole reply."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ends_at = 0
        """Where the reply being read ends: 0 until its head is in, -1 when chunked."""
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.data += data
        if not self.ends_at and (end := self.data.find(b"\r\n\r\n")) >= 0:
            fields = self.data[:end].lower()
            length = re.search(rb"\r\ncontent-length: *(\d+)", fields)
            self.ends_at = end + 4 + int(length.group(1)) if length else -1
        done = (self.ends_at > 0 and len(self.data) >= self.ends_at) or (
            self.ends_at < 0 and self.data.endswith(CHUNKED_END)
        )
        if done and self.waiter is not None and not self.waiter.done():
            head, _, body = bytes(self.data).partition(b"\r\n\r\n")
            self.data.clear()
            self.ends_at = 0
            self.waiter.set_result((int(head.split(b" ", 2)[1]), body))

    async def exchange(self, message: bytes) -> tuple[int, bytes]:
        """Status and body (chunk sizes left in) of the reply to one request."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(message)
        return await self.waiter


def checked_events(body: bytes) -> list[int]:
    """Where the `data:` of each event a check reads starts, in order (`bytes.find`: a
    regular expression over a 100 KB reply cost as much as the rest of a turn here)."""
    starts = set()
    for tag in CHECKED:
        at = body.find(tag)
        while at >= 0:
            starts.add(body.rfind(b"data:", 0, at))
            at = body.find(tag, at + len(tag))
    return sorted(starts)


def check(status: int, body: bytes, text: str, tally: Tally) -> str:
    """Tally one turn; the thread id it names ("" when it failed)."""
    tally.delta_events += body.count(TEXT_DELTA_TAG)
    thread_id, saved = "", False
    for start in checked_events(body):
        data = json.loads(body[start + 5 : body.find(b"\n\n", start)])
        if data["type"] == "error":
            saved = False  # whatever came before it
            break
        if data["type"] == "thread.created":
            thread_id = data["thread"]["id"]
        item = data.get("item", {})
        if item.get("type") == "assistant_message":
            thread_id = item["thread_id"]
            saved = "".join(part.get("text", "") for part in item["content"]) == text
    if status != 200 or not saved:
        tally.failed += 1
        return ""
    return thread_id


async def converse(
    host: str, port: int, user: str, deltas: int, turns: int, tally: Tally, until: float
) -> None:
    """One user's conversation of `turns` turns on its own connection, cut short once
    `until` (time.perf_counter) has passed."""
    thread_id, expected = "", mock_text(deltas)
    transport, connection = await asyncio.get_running_loop().create_connection(
        Connection, host, port
    )
    try:
        for turn in range(turns):
            if time.perf_counter() >= until:
                break
            said = f"turn {turn} [tokens {deltas}]"
            payload = add_message(thread_id, said) if thread_id else create_thread(said)
            reply = await connection.exchange(request(host, port, user, encode(payload)))
            thread_id = check(*reply, expected, tally) or thread_id
            tally.ended.append(time.perf_counter())
    finally:
        transport.close()


async def keep_conversing(
    host: str, port: int, deltas: int, turns: int, tally: Tally, until: float
) -> None:
    """Conversations one after another, each a new user on a new connection, until
    `until`: a steady load, where a fixed number of conversations would end with a tail
    in which one worker has nothing left to do and the other still has."""
    while time.perf_counter() < until:
        user = f"bench-{uuid.uuid4().hex[:12]}"
        await converse(host, port, user, deltas, turns, tally, until)
