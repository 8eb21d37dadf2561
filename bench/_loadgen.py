"""A cheap ChatKit load generator: one keep-alive HTTP/1.1 connection per conversation on
asyncio streams, requests built as bytes, and only the events a check needs parsed.

httpx spends about as much CPU per turn as the OpenAI mock does; on a 2-core machine that
is CPU the servers under test would use, so a bench of one serving process against two
drives them with this instead. Every turn is still checked: status 200, no `error`
event, and the assistant message saved (`thread.item.done`) with exactly the mock's text.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from chatkit_client import TEXT_DELTA, add_message, create_thread, encode

TEXT_DELTA_TAG = f'"{TEXT_DELTA}"'.encode()


@dataclass
class Tally:
    """What a conversation saw: turns that failed and the text-delta events received."""

    failed: int = 0
    delta_events: int = 0


def mock_text(deltas: int) -> str:
    """The reply tests/openai_mock.py writes for `[tokens N]`."""
    return "".join(f"w{i} " for i in range(deltas))


def request(host: str, port: int, user: str, body: bytes) -> bytes:
    head = (
        f"POST /chatkit HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"x-user-id: {user}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response (chunked or with a Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = {
        k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
    }
    if "content-length" in fields:
        return status, await reader.readexactly(int(fields["content-length"]))
    chunks = []
    while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
        chunks.append((await reader.readexactly(size + 2))[:-2])
    await reader.readuntil(b"\r\n")
    return status, b"".join(chunks)


def check(status: int, body: bytes, text: str, tally: Tally) -> str:
    """Tally one turn; the thread id it names ("" when it failed)."""
    thread_id, saved = "", False
    for event in body.split(b"\n\n"):
        if TEXT_DELTA_TAG in event:
            tally.delta_events += 1
        elif b'"thread.item.done"' in event or b'"thread.created"' in event or b'"error"' in event:
            data = json.loads(event.partition(b"data:")[2])
            if data["type"] == "error":
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


async def converse(host: str, port: int, user: str, deltas: int, turns: int) -> Tally:
    """One user's conversation of `turns` turns on one connection."""
    tally, thread_id = Tally(), ""
    expected = mock_text(deltas)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for turn in range(turns):
            said = f"turn {turn} [tokens {deltas}]"
            payload = add_message(thread_id, said) if thread_id else create_thread(said)
            writer.write(request(host, port, user, encode(payload)))
            status, body = await read_response(reader)
            thread_id = check(status, body, expected, tally) or thread_id
    finally:
        writer.close()
    return tally
