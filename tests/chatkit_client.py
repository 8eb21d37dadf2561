"""What a ChatKit client sends and reads: request bodies, and SSE parsed into event dicts.

Shared by the tests that talk to a real server over HTTP (HTTP/1.1, HTTP/2, raw h2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

TEXT_DELTA = "assistant_message.content_part.text_delta"


def user_input(text: str) -> dict[str, Any]:
    """A plain-text user message as the web client sends it."""
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


def create_thread(text: str) -> dict[str, Any]:
    """threads.create: a new thread from the user's first message (streamed)."""
    return {"type": "threads.create", "params": {"input": user_input(text)}}


def add_message(thread_id: str, text: str) -> dict[str, Any]:
    """threads.add_user_message: the next turn of a thread (streamed)."""
    return {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": user_input(text)},
    }


def get_thread(thread_id: str) -> dict[str, Any]:
    """threads.get_by_id: the thread with its first items (JSON)."""
    return {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}


def list_items(
    thread_id: str, limit: int | None = None, order: str = "asc", after: str | None = None
) -> dict[str, Any]:
    """items.list: one page of a thread's items (JSON)."""
    params: dict[str, Any] = {"thread_id": thread_id, "order": order}
    if limit is not None:
        params["limit"] = limit
    if after is not None:
        params["after"] = after
    return {"type": "items.list", "params": params}


def encode(request: dict[str, Any]) -> bytes:
    """A request body as bytes on the wire."""
    return json.dumps(request).encode()


class SSEDecoder:
    """Incremental SSE parser: feed it bytes as they arrive, get whole events back."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """The events completed by this chunk, each `data:` payload parsed as JSON."""
        self._buffer += chunk
        events: list[dict[str, Any]] = []
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode()
            if not line:
                if self._data:
                    events.append(json.loads("\n".join(self._data)))
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
        return events


def parse_sse(body: bytes | str) -> list[dict[str, Any]]:
    """A whole SSE response body as its list of events."""
    return SSEDecoder().feed(body.encode() if isinstance(body, str) else body)


def is_text_delta(event: dict[str, Any]) -> bool:
    """True for an assistant text delta (`thread.item.updated` with a text_delta update)."""
    return event.get("type") == "thread.item.updated" and event["update"]["type"] == TEXT_DELTA


def assistant_text(events: Iterable[dict[str, Any]]) -> str:
    """The assistant text streamed in these events: its deltas joined."""
    return "".join(event["update"]["delta"] for event in events if is_text_delta(event))


def thread_id_of(events: Sequence[dict[str, Any]]) -> str:
    """The id of the thread a stream belongs to (from its first event naming one)."""
    for event in events:
        if event.get("type") in ("thread.created", "thread.updated"):
            return str(event["thread"]["id"])
        if event.get("type") == "thread.item.done":
            return str(event["item"]["thread_id"])
    raise AssertionError(f"no thread id in the stream: {events!r}"[:500])


def message_texts(items: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(item type, text) for each user or assistant message among thread items."""
    texts = []
    for item in items:
        if item.get("type") in ("user_message", "assistant_message"):
            text = "".join(part.get("text", "") for part in item["content"])
            texts.append((str(item["type"]), text))
    return texts
