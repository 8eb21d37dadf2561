"""The replies streaming in this process: one at a time per thread, a few at a time per user.

One reply per thread keeps a thread's history in order (two tabs, or a retry racing a new
message, would otherwise interleave replies and orphan one). A cap per user keeps one user
from holding every model connection. `stop` ends replies early (a shutdown, a deleted
thread) with an `error` event for a reader still there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
from chatkit.types import ErrorEvent

THREAD_WAIT_SECONDS = 5.0
"""How long a new reply waits for the thread's current one: a stopped reply is saving."""


class Busy(Exception):
    """A reply cannot start now: `status` is 409 (its thread is busy) or 429 (its user is)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class Slot:
    """One reply's place: whose, in which thread, and the task producing it once started."""

    user_id: str
    thread_id: str | None
    producer: asyncio.Task[None] | None = None
    stopped_with: ErrorEvent | None = None
    """Why the reply was stopped early, for a reader still there; None if it was not (or
    if the reader is who left)."""
    waited: bool = False
    """Whether it waited for its thread's previous reply (the thread may be gone since)."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)


def _cancel_once(producer: asyncio.Task[None]) -> None:
    """Cancel a stream's producer unless it already is: a second `Task.cancel()` (a shutdown,
    then the client leaving) would cut its partial-reply save short, shield or not."""
    if not producer.cancelling():
        producer.cancel()


class Streams:
    """The registry of replies in flight; every method runs on the event loop's thread."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._slots: set[Slot] = set()

    def live(self) -> list[Slot]:
        """The replies running or about to start (reserved, their producer not yet made)."""
        return list(self._slots)

    async def reserve(self, user_id: str, thread_id: str | None) -> Slot:
        """A place for a new reply, after the thread's current one ends (bounded: 409)."""
        waited = False
        if thread_id is not None:
            with anyio.move_on_after(THREAD_WAIT_SECONDS):
                while current := self.on_thread(thread_id):
                    waited = True
                    await current[0].ended.wait()
            if self.on_thread(thread_id):
                raise Busy(409, "a reply is still being written in this thread; retry when it ends")
        if sum(slot.user_id == user_id for slot in self.live()) >= self.per_user:
            raise Busy(429, f"at most {self.per_user} replies at once per user; retry shortly")
        slot = self.claim(user_id, thread_id)
        slot.waited = waited
        return slot

    def claim(self, user_id: str, thread_id: str | None) -> Slot:
        """A place taken without waiting or limits (a delete holding its thread)."""
        slot = Slot(user_id, thread_id)
        self._slots.add(slot)
        return slot

    def on_thread(self, thread_id: str) -> list[Slot]:
        return [slot for slot in self.live() if slot.thread_id == thread_id]

    def start(self, slot: Slot, producer: asyncio.Task[None]) -> None:
        slot.producer = producer
        producer.add_done_callback(lambda _: self.end(slot))

    def end(self, slot: Slot) -> None:
        slot.ended.set()
        self._slots.discard(slot)

    def stop(self, slots: Iterable[Slot], why: ErrorEvent | None) -> list[asyncio.Task[None]]:
        """Cancel these replies (once each), telling their readers `why`; the producers to
        wait for."""
        producers = []
        for slot in slots:
            slot.stopped_with = slot.stopped_with or why
            if slot.producer is not None:  # else it is between its reservation and its start
                _cancel_once(slot.producer)
                producers.append(slot.producer)
        return producers
