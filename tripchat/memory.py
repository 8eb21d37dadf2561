"""Agents SDK session memory kept in tripchat's own database.

The rows live in the SDK's `agent_sessions` / `agent_messages` tables (same layout as
`SQLiteSession`), reached through whichever store `CHATKIT_DB_URL` opened, so the CLI's
resumable conversations work the same on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from agents import TResponseInputItem
from agents.memory import SessionABC

from .store import SQLStore


class StoreSession(SessionABC):
    """One agent conversation, keyed by `session_id`, in the store's database."""

    def __init__(self, session_id: str, store: SQLStore) -> None:
        self.session_id = session_id
        self._store = store

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        return await self._store.load_session_items(self.session_id, limit)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        await self._store.add_session_items(self.session_id, items)

    async def pop_item(self) -> TResponseInputItem | None:
        item: TResponseInputItem | None = await self._store.pop_session_item(self.session_id)
        return item

    async def clear_session(self) -> None:
        await self._store.clear_session(self.session_id)
