"""Reply leases: the per-thread and per-user limits, held in the database for every process.

A reply runs under a lease row: one per thread (a unique `thread_id`), at most `per_user`
per user (the `slot` of the primary key `(user_id, slot)` runs from 0 to `per_user - 1`),
so the database's unique constraints, not a lock, decide a race between processes or
machines. A lease expires unless renewed; a crashed process's leases are taken over once
they expire. Expiry is judged by the database's clock, so machines need not agree on time.
"""

from __future__ import annotations

import os
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

ATTEMPTS = 3
"""Tries when a concurrent taker wins the same free slot: a race, not a full user."""


@dataclass
class Lease:
    """One reply's lease; `holder` is unique to it, so only its taker renews or frees it."""

    user_id: str
    slot: int
    holder: str
    thread_id: str | None


def new_holder() -> str:
    """A lease's owner, readable in the table: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class LeaseStore(ABC):
    """The lease statements, written once; the drivers supply the primitives and the clock."""

    _now_sql = "((julianday('now') - 2440587.5) * 86400.0)"
    """The database's current Unix time in seconds (SQLite; PostgreSQL overrides it)."""

    @abstractmethod
    async def _fetchone(self, sql: str, *args: Any) -> Sequence[Any] | None: ...

    @abstractmethod
    async def _execute(self, sql: str, *args: Any) -> None: ...

    async def take_lease(
        self, user_id: str, thread_id: str | None, per_user: int, seconds: float
    ) -> Lease | Literal["thread", "user"]:
        """A lease for a new reply, or which limit refuses it: the thread's or the user's.

        Expired leases are swept only when a take meets a lease in its way (which may be
        one of them: a crashed process's): a sweep on every take was one more write per
        turn, serialised with every other process's writes on SQLite. A crashed process's
        other leases stay, expired and harmless, until their user or thread takes again."""
        holder = new_holder()
        for attempt in range(ATTEMPTS + 1):
            row = await self._fetchone(
                f"WITH RECURSIVE slots (n) AS (SELECT 0 UNION ALL "
                f"SELECT n + 1 FROM slots WHERE n + 1 < ?) "
                f"INSERT INTO chatkit_leases (user_id, slot, thread_id, holder, expires_at) "
                f"SELECT ?, n, ?, ?, {self._now_sql} + ? FROM slots "
                f"WHERE n NOT IN (SELECT slot FROM chatkit_leases WHERE user_id = ?) "
                f"ORDER BY n LIMIT 1 ON CONFLICT DO NOTHING RETURNING slot",
                per_user,
                user_id,
                thread_id,
                holder,
                seconds,
                user_id,
            )
            if row is not None:
                return Lease(user_id, int(row[0]), holder, thread_id)
            if attempt == 0:
                await self._execute(
                    f"DELETE FROM chatkit_leases WHERE expires_at < {self._now_sql}"
                )
                continue
            if thread_id is not None and await self._fetchone(
                "SELECT 1 FROM chatkit_leases WHERE thread_id = ?", thread_id
            ):
                return "thread"
            held = await self._fetchone(
                "SELECT COUNT(*) FROM chatkit_leases WHERE user_id = ?", user_id
            )
            if held is not None and int(held[0]) >= per_user:
                return "user"
        return "user"

    async def renew_lease(self, lease: Lease, seconds: float) -> Literal["held", "lost", "deleted"]:
        """Extend a lease (recording the thread a new conversation got); "lost" if it
        expired and was taken over, "deleted" if its thread is gone (another process
        deleted it): either way the reply must stop."""
        row = await self._fetchone(
            f"UPDATE chatkit_leases SET expires_at = {self._now_sql} + ?, thread_id = ? "
            f"WHERE user_id = ? AND slot = ? AND holder = ? RETURNING slot",
            seconds,
            lease.thread_id,
            lease.user_id,
            lease.slot,
            lease.holder,
        )
        if row is None:
            return "lost"
        if lease.thread_id is not None and not await self._fetchone(
            "SELECT 1 FROM chatkit_threads WHERE thread_id = ?", lease.thread_id
        ):
            return "deleted"
        return "held"

    async def release_lease(self, lease: Lease) -> None:
        """Free a lease at the end of its reply (a no-op if it was taken over)."""
        await self._execute(
            "DELETE FROM chatkit_leases WHERE user_id = ? AND slot = ? AND holder = ?",
            lease.user_id,
            lease.slot,
            lease.holder,
        )
