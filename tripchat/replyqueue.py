"""The queue between a reply's producer task and its response: unbounded, one reader.

`asyncio.Queue` makes four deques (items, getters, putters, and its `join` Event's
waiters) of 760 bytes each: about 3 KB for every reply held open, for a queue that never
has more than one reader and never blocks a writer. This one is a list, and a future
only while the reader waits.
"""

from __future__ import annotations

import asyncio


class ReplyQueue:
    """`asyncio.Queue`'s `put_nowait`, `get`, `get_nowait` and `empty`, for frames and the
    `None` that ends them."""

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[bytes | None] = []
        self._head = 0  # items before it were read; the list is emptied once all were
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return self._head == len(self._items)

    def put_nowait(self, item: bytes | None) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def get_nowait(self) -> bytes | None:
        """The next item; `IndexError` if there is none."""
        item = self._items[self._head]
        self._items[self._head] = None  # read: a reader that never quite catches up holds none
        self._head += 1
        if self._head == len(self._items):
            self._items.clear()
            self._head = 0
        return item

    async def get(self) -> bytes | None:
        while self.empty():
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()
