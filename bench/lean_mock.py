"""The test mock's own ASGI app (tests/openai_mock.py) behind a minimal HTTP/1.1 server.

    python bench/lean_mock.py --port 0 [--tokens 20] [--delay 0]

Same replies, byte for byte in the SSE events, and the same directives as the mock a test
uses: only Hypercorn is replaced, by an asyncio Protocol that parses a request with a
Content-Length body (what the `openai` client sends) and writes each ASGI body message as
one chunk of a chunked response. On a 2-core machine Hypercorn's per-request work is a
share of a core that the servers under test would otherwise use: a bench comparing one
serving process with two needs the mock as cheap as it can be. Prints
`OPENAI_BASE_URL=...` once listening; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from openai_mock import OpenAIMock

REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 429: b"Too Many Requests"}


class Connection(asyncio.Protocol):
    """One client connection: requests one after another (keep-alive, no pipelining)."""

    def __init__(self, app: OpenAIMock) -> None:
        self.app = app
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
        self.busy = True
        self.task = asyncio.ensure_future(
            self._serve(method, target.split("?", 1)[0], fields, body)
        )

    async def _serve(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.shield(self.gone)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            assert self.transport is not None
            if message["type"] == "http.response.start":
                status = message["status"]
                head = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error"))]
                head += [k + b": " + v for k, v in message["headers"]]
                head.append(b"transfer-encoding: chunked\r\n\r\n")
                self.transport.write(b"\r\n".join(head))
                return
            data = message.get("body", b"")
            if data:
                self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
            if not message.get("more_body", False):
                self.transport.write(b"0\r\n\r\n")

        scope = {"type": "http", "method": method, "path": path, "headers": headers}
        try:
            await self.app(scope, receive, send)  # type: ignore[arg-type]
        finally:
            self.app.requests.clear()  # a bench reads none of them back: keep memory flat
            self.busy = False
        if not self.gone.done():
            self._next()


async def serve(tokens: int, delay: float, port: int) -> None:
    app = OpenAIMock(tokens=tokens, delay=delay, port=port)
    app.listen()
    assert app._socket is not None  # bound by listen()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(app), sock=app._socket, backlog=2048)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(f"OPENAI_BASE_URL={app.base_url}", flush=True)
    await stopping.wait()
    server.close()


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
