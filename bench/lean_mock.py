"""The test mock's own ASGI app (tests/openai_mock.py) behind a minimal HTTP/1.1 server.

    python bench/lean_mock.py --port 0 [--tokens 20] [--delay 0]

Same replies, byte for byte in the SSE events, and the same directives as the mock a test
uses: only Hypercorn is replaced, by an asyncio Protocol that parses a request with a
Content-Length body (what the `openai` client sends) and writes each ASGI body message as
one chunk of a chunked response, all the chunks one loop iteration made in one write.
A plain streamed Responses text reply (no directive but `[tokens N]`) is made by the app
once per request shape (the fields it echoes, N) and replayed after that with fresh ids,
timestamps and token counts (`Replays`): one write of bytes already made. On a 2-core
machine the mock's per-request work is a share of a core that the servers under test
would otherwise use: a bench comparing one serving process with two needs the mock as
cheap as it can be. Prints `OPENAI_BASE_URL=...` once listening; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from openai_mock import Directives, OpenAIMock, parse_directives, responses_turn

REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 429: b"Too Many Requests"}
REPLAYED = "/v1/responses"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def head(message: dict[str, Any]) -> bytes:
    status = message["status"]
    lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error"))]
    lines += [k + b": " + v for k, v in message["headers"]]
    lines.append(b"transfer-encoding: chunked\r\n\r\n")
    return b"\r\n".join(lines)


@dataclass
class Reply:
    """One whole reply the app wrote, and the values in it that differ per request."""

    before_last: bytes
    """The head and every chunk but the last event's."""
    last: bytes
    """The last event (`response.completed`: the only one with usage and completed_at)."""
    ids: tuple[bytes, ...]
    """The request, response and message ids, each replaced by a fresh one of its kind."""
    created: bytes
    completed: bytes
    input_tokens: int
    output_tokens: int

    @classmethod
    def of(cls, messages: list[dict[str, Any]]) -> Reply | None:
        """The replay of the app's messages for a 200 streamed text reply, else None."""
        start, *bodies = messages
        events = [m.get("body", b"") for m in bodies]
        if start["status"] != 200 or len(events) < 3 or events[-1] == b"":
            return None
        first = json.loads(events[0].partition(b"data: ")[2])["response"]
        added = json.loads(events[2].partition(b"data: ")[2])["item"]
        final = json.loads(events[-1].partition(b"data: ")[2])["response"]
        request_id = dict(start["headers"])[b"x-request-id"]
        return cls(
            before_last=head(start) + b"".join(chunk(e) for e in events[:-1]),
            last=events[-1],
            ids=(request_id, first["id"].encode(), added["id"].encode()),
            created=b'"created_at": %d' % first["created_at"],
            completed=b'"completed_at": %d' % final["completed_at"],
            input_tokens=final["usage"]["input_tokens"],
            output_tokens=final["usage"]["output_tokens"],
        )

    def again(self, input_tokens: int) -> bytes:
        """The same reply for another request with `input_tokens`, as the app makes it."""
        now = int(time.time())
        before, last = self.before_last, self.last
        for old in self.ids:
            new = old.split(b"_", 1)[0] + b"_" + uuid.uuid4().hex.encode()
            before, last = before.replace(old, new), last.replace(old, new)
        before = before.replace(self.created, b'"created_at": %d' % now)
        last = last.replace(self.created, b'"created_at": %d' % now)
        last = last.replace(self.completed, b'"completed_at": %d' % now)
        for name, old_n, new_n in (
            (b"input_tokens", self.input_tokens, input_tokens),
            (
                b"total_tokens",
                self.input_tokens + self.output_tokens,
                input_tokens + self.output_tokens,
            ),
        ):
            last = last.replace(b'"%s": %d' % (name, old_n), b'"%s": %d' % (name, new_n))
        return before + chunk(last) + b"0\r\n\r\n"


class Replays:
    """Replies already made, by the shape of the request they answer."""

    def __init__(self, app: OpenAIMock) -> None:
        self.app = app
        self.replies: dict[tuple[str, int | None], Reply | None] = {}
        self.replayed = self.made = 0

    def key(self, path: str, raw: bytes) -> tuple[tuple[str, int | None], int] | None:
        """What a reply depends on beside ids and time, and the request's input tokens as
        the app counts them; None for a request the app must answer itself."""
        if path != REPLAYED or self.app.delay:
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("stream") is not True:
            return None
        turn = responses_turn(body)
        directives = parse_directives(turn.user_text or "")
        if turn.tool_outputs or directives != Directives(tokens=directives.tokens):
            return None
        echoed = json.dumps({k: v for k, v in body.items() if k != "input"})
        if echoed == "{}" or "input" not in body:
            return (echoed, directives.tokens), len(json.dumps(body)) // 4
        # The app's len(json.dumps(body)), without serialising the echoed fields twice.
        size = len(echoed) + len('"input": , ') + len(json.dumps(body["input"]))
        return (echoed, directives.tokens), size // 4


class Connection(asyncio.Protocol):
    """One client connection: requests one after another (keep-alive, no pipelining)."""

    def __init__(self, app: OpenAIMock, replays: Replays) -> None:
        self.app = app
        self.replays = replays
        self.out: list[bytes] = []
        self.buffer = b""
        self.busy = False
        self.task: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.gone = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone.done():
            self.gone.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        """Start the next request once its head and whole body are in."""
        end = self.buffer.find(b"\r\n\r\n")
        if self.busy or end < 0:
            return
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        headers = [tuple(line.split(":", 1)) for line in lines[1:] if ":" in line]
        fields = [(k.strip().lower().encode(), v.strip().encode()) for k, v in headers]
        length = int(dict(fields).get(b"content-length", b"0"))
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        method, target = lines[0].split(" ")[:2]
        path = target.split("?", 1)[0]
        found = self.replays.key(path, body) if method == "POST" else None
        reply = self.replays.replies.get(found[0]) if found else None
        if reply is not None and found is not None:
            assert self.transport is not None
            self.transport.write(reply.again(found[1]))
            self.replays.replayed += 1
            self._next()
            return
        self.busy = True
        self.task = asyncio.ensure_future(self._serve(method, path, fields, body, found))

    def _flush(self) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self.out))
        self.out.clear()

    def _write(self, data: bytes) -> None:
        """Everything written in one loop iteration goes out in one write."""
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        self.out.append(data)

    async def _serve(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        found: tuple[tuple[str, int | None], int] | None,
    ) -> None:
        sent_body = False
        messages: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.shield(self.gone)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if found is not None:
                messages.append(message)
            if message["type"] == "http.response.start":
                self._write(head(message))
                return
            data = message.get("body", b"")
            if data:
                self._write(chunk(data))
            if not message.get("more_body", False):
                self._write(b"0\r\n\r\n")

        scope = {"type": "http", "method": method, "path": path, "headers": headers}
        try:
            await self.app(scope, receive, send)  # type: ignore[arg-type]
        finally:
            self.app.requests.clear()  # a bench reads none of them back: keep memory flat
            self.busy = False
        self.replays.made += 1
        if found is not None and messages:
            self.replays.replies[found[0]] = Reply.of(messages)
        if not self.gone.done():
            self._next()


async def serve(tokens: int, delay: float, port: int) -> None:
    app = OpenAIMock(tokens=tokens, delay=delay, port=port)
    app.listen()
    assert app._socket is not None  # bound by listen()
    loop = asyncio.get_running_loop()
    replays = Replays(app)
    server = await loop.create_server(
        lambda: Connection(app, replays), sock=app._socket, backlog=2048
    )
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(f"OPENAI_BASE_URL={app.base_url}", flush=True)
    await stopping.wait()
    server.close()
    print(f"replies replayed: {replays.replayed}; made by the app: {replays.made}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.tokens, args.delay, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
