"""The ceiling: a bare ASGI app that streams what a tripchat turn streams, and nothing else.

No ChatKit, no agent, no model call, no store: a `POST /chatkit` is answered with the
same SSE event sequence, in the same sizes, as a real tripchat turn (counted from one):

    [thread.created]  user item done  stream_options  item.added  content_part.added
    N x text_delta    content_part.done  item.done  [thread.updated]

(the bracketed two only for `threads.create`), N = $CEILING_TOKENS (default 20). Each
event is serialised per request and sent as its own body chunk, as Starlette's
`StreamingResponse` does. It is served through tripchat's own `serve` entry point, so
the Hypercorn configuration (bind, access log, timeouts, workers) is tripchat's by
construction:

    python bench/ceiling_app.py --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _now() -> str:
    return datetime.now().isoformat()


def _thread(thread_id: str, created_at: str, title: str | None = None) -> dict[str, Any]:
    thread: dict[str, Any] = {"title": title} if title else {}
    thread.update(
        id=thread_id,
        created_at=created_at,
        status={"type": "active"},
        metadata={},
        items={"data": [], "has_more": False},
    )
    return thread


def turn_events(request: dict[str, Any], tokens: int) -> Iterator[dict[str, Any]]:
    """The events of one tripchat turn answering `request`, with `tokens` text deltas."""
    params = request.get("params", {})
    created = request.get("type") == "threads.create"
    thread_id = _id("thr") if created else str(params.get("thread_id", _id("thr")))
    thread_at = _now()
    content = params.get("input", {}).get("content", [])
    if created:
        yield {"type": "thread.created", "thread": _thread(thread_id, thread_at)}
    yield {
        "type": "thread.item.done",
        "item": {
            "id": _id("msg"),
            "thread_id": thread_id,
            "created_at": _now(),
            "type": "user_message",
            "content": content,
            "attachments": [],
            "inference_options": {},
        },
    }
    yield {"type": "stream_options", "stream_options": {"allow_cancel": True}}
    item_id = _id("msg")
    item = {
        "id": item_id,
        "thread_id": thread_id,
        "created_at": _now(),
        "type": "assistant_message",
    }
    yield {"type": "thread.item.added", "item": {**item, "content": []}}
    part_added = {"annotations": [], "text": "", "type": "output_text"}
    yield _update(item_id, {"type": "assistant_message.content_part.added", "content": part_added})
    for index in range(tokens):
        delta = {"type": "assistant_message.content_part.text_delta", "delta": f"w{index} "}
        yield _update(item_id, delta)
    text = "".join(f"w{i} " for i in range(tokens))
    part = {"annotations": [], "text": text, "type": "output_text"}
    yield _update(item_id, {"type": "assistant_message.content_part.done", "content": part})
    yield {"type": "thread.item.done", "item": {**item, "content": [part]}}
    if created:
        title = " ".join(str(c.get("text", "")) for c in content)[:48] or "New trip"
        yield {"type": "thread.updated", "thread": _thread(thread_id, thread_at, title)}


def _update(item_id: str, update: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "thread.item.updated",
        "item_id": item_id,
        "update": {"type": update["type"], "content_index": 0, **update},
    }


class _NoDrain:
    """What `tripchat serve` calls at shutdown on `app.state.server`."""

    draining = False

    async def drain(self, grace: float) -> None:
        return None


class CeilingApp:
    """`POST /chatkit` streams a canned turn; `GET /healthz` is 200; lifespan is a no-op."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.state = SimpleNamespace(server=_NoDrain())

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await _answer(send, 200, JSON_HEADERS, b'{"status":"ok"}')
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")  # type: ignore[operator]
            more = bool(message.get("more_body", False))
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for event in turn_events(json.loads(body), self.tokens):
            frame = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _answer(send: ASGISendCallable, status: int, headers: list[Any], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def main(argv: list[str] | None = None) -> int:
    """Run `tripchat serve` with this app in place of tripchat's."""
    import tripchat.asgi
    import tripchat.cli

    app = CeilingApp(int(os.environ.get("CEILING_TOKENS", "20")))
    setattr(tripchat.asgi, "create_app", lambda *args, **kwargs: app)  # noqa: B010
    return tripchat.cli.main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
