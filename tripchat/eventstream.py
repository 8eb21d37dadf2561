"""A reply's SSE response: the request's own task sends, one small task waits for the client
to leave.

Starlette's `StreamingResponse` (ASGI spec < 2.4, as Hypercorn speaks it) sends from a
child task of an anyio task group while the request's task listens for the disconnect:
per held stream a task group, its cancel scopes and wrappers: 4.5 KB of the 170 KB a
held stream cost (traced). Here the frames go out from the request's task, and a bare task
awaits `http.disconnect`, which is how both an HTTP/1.1 close and an HTTP/2 RST_STREAM
arrive. When the client leaves it cancels the send loop; the reply's generator is closed
where it waits, and its own `finally` stops the run so the partial reply is saved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

SSE_HEADERS = (
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
)
"""What `StreamingResponse(media_type="text/event-stream")` sent: no caching, and no
buffering by a proxy (nginx), so every delta reaches the browser as it is written."""


class EventStream(Response):
    """`frames` as `text/event-stream`, stopped (and closed) as soon as the client leaves."""

    def __init__(self, frames: AsyncGenerator[bytes, None]) -> None:
        # Starlette's `Response.__init__` would render an empty body and its length header.
        self.frames = frames
        self.status_code = 200
        self.background = None
        self.raw_headers = list(SSE_HEADERS)  # its own: a middleware may add to it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        left = anyio.CancelScope()
        listener = asyncio.create_task(_disconnected(receive))

        def client_left(task: asyncio.Task[None]) -> None:
            if not task.cancelled():  # cancelled below: the reply ended, nobody left
                left.cancel()

        listener.add_done_callback(client_left)
        try:
            with left:
                # The first frame before the headers: a generator that never started runs
                # nothing on `aclose`, so a client gone before then would leave the reply
                # running for nobody. Once started, leaving at any point runs its `finally`.
                first = await anext(self.frames, b"")
                start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                await send(start)
                if first:
                    await send({"type": "http.response.body", "body": first, "more_body": True})
                async for frame in self.frames:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                # Sent whole: the disconnect Hypercorn reports once the response ends is not
                # a client leaving.
                listener.remove_done_callback(client_left)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            listener.cancel()
            # Left while a write was pending: the generator waits at its `yield`; closing it
            # now runs its `finally` (stop the run, save the partial) at once, not at its GC.
            await self.frames.aclose()


async def _disconnected(receive: Receive) -> None:
    """Until the client is gone (the request body was read before the reply started)."""
    while (await receive())["type"] != "http.disconnect":
        pass
