"""The replies streaming: one at a time per thread, a few at a time per user, in every process.

One reply per thread keeps a thread's history in order (two tabs, or a retry racing a new
message, would otherwise interleave replies and orphan one). A cap per user keeps one user
from holding every model connection. Both hold across processes and machines through a
lease in the database (`store.leases`), renewed while the reply runs; this registry keeps
what only this process can do: wake its own waiters at once, and `stop` its own replies
early (a shutdown, a deleted thread, a lease lost) with an `error` event for a reader
still there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
from chatkit.types import ErrorEvent

from .store import Lease, LeaseStore

logger = logging.getLogger("tripchat.streams")

THREAD_WAIT_SECONDS = 5.0
"""How long a new reply waits for the thread's current one: a stopped reply is saving."""
POLL_SECONDS = 0.1
"""How often a reply waiting for a thread busy on another process asks again."""
RENEWALS_PER_LEASE = 3
"""A lease is renewed three times per its length: two renewals may fail before it expires."""
DELETED = ErrorEvent(code="custom", message="This conversation was deleted.", allow_retry=False)
LOST = ErrorEvent(
    code="custom", message="This reply was interrupted. Please retry.", allow_retry=True
)


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
    finished: bool = False
    """True once the reply is over; its lease is being freed. A flag, not an Event (nothing
    waits for it): every Event costs a held reply about 1 KB."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when its place is free: the reply is over and its lease freed."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Renew the lease now: the reply is over, or its new thread has an id."""
    lease: Lease | None = None
    keeper: asyncio.Task[None] | None = None
    """Renews the lease while the reply runs, frees it when the reply is over."""


def _cancel_once(producer: asyncio.Task[None]) -> None:
    """Cancel a stream's producer unless it already is: a second `Task.cancel()` (a shutdown,
    then the client leaving) would cut its partial-reply save short, shield or not."""
    if not producer.cancelling():
        producer.cancel()


class Streams:
    """The registry of replies in flight; every method runs on the event loop's thread."""

    def __init__(self, per_user: int, leases: LeaseStore, lease_seconds: float = 15.0) -> None:
        self.per_user = per_user
        self.leases = leases
        self.lease_seconds = lease_seconds
        self._slots: set[Slot] = set()
        self._keepers: set[asyncio.Task[None]] = set()

    def live(self) -> list[Slot]:
        """The replies running or about to start (reserved, their producer not yet made)."""
        return list(self._slots)

    async def reserve(self, user_id: str, thread_id: str | None) -> Slot:
        """A place and a lease for a new reply, after the thread's current one (here or on
        another process) ends, bounded: 409; past the user's limit: 429."""
        waited = False
        deadline = asyncio.get_running_loop().time() + THREAD_WAIT_SECONDS
        busy = Busy(409, "a reply is still being written in this thread; retry when it ends")
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if thread_id is not None and (current := self.on_thread(thread_id)):
                waited = True
                with anyio.move_on_after(left):
                    await current[0].ended.wait()
                if not current[0].ended.is_set():
                    raise busy
                continue
            slot = self.claim(user_id, thread_id)
            try:
                lease = await self.leases.take_lease(
                    user_id, thread_id, self.per_user, self.lease_seconds
                )
            except BaseException:
                self.end(slot)
                raise
            if isinstance(lease, Lease):
                slot.lease, slot.waited = lease, waited
                slot.keeper = asyncio.create_task(self._keep(slot))
                self._keepers.add(slot.keeper)
                slot.keeper.add_done_callback(functools.partial(self._free, slot))
                return slot
            self.end(slot)
            if lease == "user":
                raise Busy(429, f"at most {self.per_user} replies at once per user; retry shortly")
            if left <= 0:
                raise busy
            waited = True  # its reply runs on another process: ask again shortly
            await asyncio.sleep(min(POLL_SECONDS, left))

    async def _keep(self, slot: Slot) -> None:
        """Renew the slot's lease until the reply ends, then free it. A thread deleted by
        another process, or a lease taken over, stops the reply."""
        assert slot.lease is not None
        lease = slot.lease
        try:
            while not slot.finished:
                with anyio.move_on_after(self.lease_seconds / RENEWALS_PER_LEASE):
                    await slot.wake.wait()
                slot.wake.clear()
                if slot.finished:
                    break
                lease.thread_id = slot.thread_id
                try:
                    state = await self.leases.renew_lease(lease, self.lease_seconds)
                except Exception:  # the database is away: the reply's own writes will tell
                    logger.warning("could not renew the lease of a reply", exc_info=True)
                    continue
                if state != "held":
                    logger.warning("stopping a reply: its lease is %s", state)
                    self.stop([slot], DELETED if state == "deleted" else LOST)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.leases.release_lease(lease)
                except Exception:  # it expires on its own
                    logger.warning("could not release the lease of a reply", exc_info=True)

    async def settle(self) -> None:
        """Wait until every ended reply has freed its lease (before the store closes)."""
        while self._keepers:
            await asyncio.wait(list(self._keepers))

    def claim(self, user_id: str, thread_id: str | None) -> Slot:
        """A place in this process only, taken without waiting or limits (a delete holding
        its thread; a reply about to ask for its lease)."""
        slot = Slot(user_id, thread_id)
        self._slots.add(slot)
        return slot

    def on_thread(self, thread_id: str) -> list[Slot]:
        return [slot for slot in self.live() if slot.thread_id == thread_id]

    def bind(self, slot: Slot, thread_id: str) -> None:
        """A new conversation's reply now has its thread: lease it at once."""
        slot.thread_id = thread_id
        slot.wake.set()

    def start(self, slot: Slot, producer: asyncio.Task[None]) -> None:
        slot.producer = producer
        producer.add_done_callback(lambda _: self.end(slot))

    def end(self, slot: Slot) -> None:
        """The reply is over: its place is free once its lease is (at once if it has none)."""
        slot.finished = True
        slot.wake.set()
        if slot.keeper is None:
            self._free(slot)

    def _free(self, slot: Slot, keeper: asyncio.Task[None] | None = None) -> None:
        if keeper is not None:
            self._keepers.discard(keeper)
        self._slots.discard(slot)
        slot.ended.set()

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
