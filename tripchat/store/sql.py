"""The ChatKit `Store` contract written once, as parameterised SQL both databases accept.

`SQLStore` holds every rule of the contract (ownership, upserts, cursor pagination,
serialisation, ids). A driver only supplies the primitives (`_fetchall`, `_fetchone`,
`_execute`, `_executemany`) plus open and close: `tripchat.store.sqlite` and
`tripchat.store.postgres`. It reads only `context.user_id` from a request.
"""

from __future__ import annotations

import json
import secrets
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any, Protocol, Self, TypeVar

from chatkit.store import NotFoundError, Store, StoreItemType
from chatkit.types import Attachment, FeedbackKind, Page, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter

from .leases import LeaseStore

SCHEMA_VERSION = 1
MAX_ID = 2**63 - 1

_ITEM: TypeAdapter[ThreadItem] = TypeAdapter(ThreadItem)
_ATTACHMENT: TypeAdapter[Attachment] = TypeAdapter(Attachment)

_ID_PREFIXES: dict[StoreItemType, str] = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "workflow": "wf",
    "task": "tsk",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}

Row = Sequence[Any]
_UPSERT_ITEM = (  # only while the thread is its owner's; an upsert, see `add_thread_item`
    "INSERT INTO chatkit_items (thread_id, item_id, item_type, item_data) SELECT ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM chatkit_threads WHERE thread_id = ? AND user_id = ?) "
    "ON CONFLICT (thread_id, item_id) DO UPDATE SET item_type = excluded.item_type, "
    "item_data = excluded.item_data"
)
T = TypeVar("T")


class HasUserId(Protocol):
    """Any request context the store accepts: it reads the owner and nothing else."""

    @property
    def user_id(self) -> str: ...


def new_id(kind: StoreItemType) -> str:
    """A 128-bit random id: the SDK's 32-bit default collides at scale."""
    return f"{_ID_PREFIXES[kind]}_{uuid.uuid4().hex}"


def load_schema(name: str = "schema.sql") -> str:
    """The schema shipped inside the package, so a plain `pip install .` finds it."""
    return files("tripchat").joinpath(name).read_text(encoding="utf-8")


class SQLStore(LeaseStore, Store[HasUserId], ABC):
    """The ChatKit `Store` contract, scoped to the owner of each thread.

    Another user's thread behaves exactly as one that does not exist: every
    statement carries the owner, and a miss raises `NotFoundError`.
    """

    # -- backend primitives -------------------------------------------------

    @abstractmethod
    async def _fetchall(self, sql: str, *args: Any) -> list[Row]: ...

    @abstractmethod
    async def _fetchone(self, sql: str, *args: Any) -> Row | None: ...

    @abstractmethod
    async def _execute(self, sql: str, *args: Any) -> None: ...

    @abstractmethod
    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per row, in order, without other writes interleaving."""

    def _json(self, text: str) -> str:
        """A JSON document as this database can store it (SQLite: as is)."""
        return text

    @abstractmethod
    async def close(self) -> None:
        """Release the connection(s); the store is unusable afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def secret_key(self) -> bytes:
        """A random key made once and kept in the database, so all processes sign alike."""
        await self._execute(
            "INSERT INTO tripchat_meta (key, value) VALUES ('secret_key', ?) "
            "ON CONFLICT (key) DO NOTHING",
            secrets.token_hex(32),
        )
        row = await self._one(
            "secret key missing", "SELECT value FROM tripchat_meta WHERE key = 'secret_key'"
        )
        return bytes.fromhex(row[0])

    async def ping(self) -> None:
        """Raise if the database cannot answer; used by /healthz."""
        await self._fetchone("SELECT 1")

    # -- ids ----------------------------------------------------------------

    def generate_thread_id(self, context: HasUserId) -> str:
        return new_id("thread")

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: HasUserId
    ) -> str:
        return new_id(item_type)

    # -- threads ------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: HasUserId) -> ThreadMetadata:
        row = await self._one(
            f"Thread {thread_id} not found",
            "SELECT thread_data FROM chatkit_threads WHERE thread_id = ? AND user_id = ?",
            thread_id,
            context.user_id,
        )
        return ThreadMetadata.model_validate_json(row[0])

    async def save_thread(self, thread: ThreadMetadata, context: HasUserId) -> None:
        # An update, else an insert a deleted id's tombstone refuses: the SDK's save after
        # a reply, racing a delete (on any process), cannot bring the thread back.
        if await self._rewrite(thread, context) is None:
            await self._one(
                f"Thread {thread.id} not found",
                "INSERT INTO chatkit_threads (thread_id, user_id, thread_data) SELECT ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM chatkit_deleted_threads WHERE thread_id = ?) "
                "ON CONFLICT (thread_id) DO NOTHING RETURNING id",
                thread.id,
                context.user_id,
                self._json(thread.model_dump_json(exclude={"items"})),
                thread.id,
            )

    async def update_thread(self, thread: ThreadMetadata, context: HasUserId) -> None:
        """Change a thread that exists: a rename racing a delete cannot bring it back."""
        if await self._rewrite(thread, context) is None:
            raise NotFoundError(f"Thread {thread.id} not found")

    async def _rewrite(self, thread: ThreadMetadata, context: HasUserId) -> Row | None:
        # The SDK passes a full Thread (with items) on creation: keep only metadata.
        return await self._fetchone(
            "UPDATE chatkit_threads SET thread_data = ?, updated_at = CURRENT_TIMESTAMP "
            "WHERE thread_id = ? AND user_id = ? RETURNING id",
            self._json(thread.model_dump_json(exclude={"items"})),
            thread.id,
            context.user_id,
        )

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: HasUserId
    ) -> Page[ThreadMetadata]:
        cursor = await self._cursor(
            after,
            order,
            "SELECT id FROM chatkit_threads WHERE thread_id = ? AND user_id = ?",
            after,
            context.user_id,
        )
        compare, direction = _direction(order)
        rows = await self._fetchall(
            f"SELECT thread_id, thread_data FROM chatkit_threads "
            f"WHERE user_id = ? AND id {compare} ? ORDER BY id {direction} LIMIT ?",
            context.user_id,
            cursor,
            _page_size(limit) + 1,
        )
        return _page(rows, limit, ThreadMetadata.model_validate_json)

    async def delete_thread(self, thread_id: str, context: HasUserId) -> None:
        # The tombstone first: a save that misses the row must already meet it.
        await self._execute(
            "INSERT INTO chatkit_deleted_threads (thread_id) SELECT thread_id FROM "
            "chatkit_threads WHERE thread_id = ? AND user_id = ? ON CONFLICT DO NOTHING",
            thread_id,
            context.user_id,
        )
        await self._one(
            f"Thread {thread_id} not found",
            "DELETE FROM chatkit_threads WHERE thread_id = ? AND user_id = ? RETURNING id",
            thread_id,
            context.user_id,
        )

    # -- items --------------------------------------------------------------

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: HasUserId
    ) -> Page[ThreadItem]:
        return await self._items_page(thread_id, after, limit, order, context, hidden=True)

    async def load_visible_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: HasUserId
    ) -> Page[ThreadItem]:
        """A page of what the user sees: hidden context items are skipped, not counted."""
        return await self._items_page(thread_id, after, limit, order, context, hidden=False)

    async def _items_page(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: str,
        context: HasUserId,
        *,
        hidden: bool,
    ) -> Page[ThreadItem]:
        cursor = await self._cursor(
            after,
            order,
            "SELECT i.id FROM chatkit_items i JOIN chatkit_threads t "
            "ON t.thread_id = i.thread_id WHERE i.thread_id = ? AND i.item_id = ? "
            "AND t.user_id = ?",
            thread_id,
            after,
            context.user_id,
        )
        compare, direction = _direction(order)
        rows = await self._fetchall(
            f"SELECT item_id, item_data FROM chatkit_items "
            f"WHERE thread_id = ? AND id {compare} ? "
            f"AND ? IN (SELECT user_id FROM chatkit_threads WHERE thread_id = ?) "
            f"AND (? OR item_type NOT IN ('hidden_context_item', 'sdk_hidden_context')) "
            f"ORDER BY id {direction} LIMIT ?",
            thread_id,
            cursor,
            context.user_id,
            thread_id,
            hidden,
            _page_size(limit) + 1,
        )
        if not rows:
            await self._check_owner(thread_id, context)
        return _page(rows, limit, _ITEM.validate_json)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: HasUserId) -> None:
        # An upsert: the SDK re-emits a workflow carried over from the last turn.
        await self.save_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: HasUserId) -> None:
        row = self._item_row(thread_id, item, context)
        await self._one(f"Thread {thread_id} not found", f"{_UPSERT_ITEM} RETURNING id", *row)

    async def add_thread_items(
        self, thread_id: str, items: Sequence[ThreadItem], context: HasUserId
    ) -> None:
        """Items upserted in one call (on PostgreSQL one transaction): a reply ending saves
        its last items with one round trip. None are saved if the thread is gone."""
        await self._executemany(
            _UPSERT_ITEM, [self._item_row(thread_id, i, context) for i in items]
        )

    def _item_row(self, thread_id: str, item: ThreadItem, context: HasUserId) -> Row:
        data = self._json(_ITEM.dump_json(item).decode())
        return (thread_id, item.id, item.type, data, thread_id, context.user_id)

    async def load_item(self, thread_id: str, item_id: str, context: HasUserId) -> ThreadItem:
        row = await self._one(
            f"Item {item_id} not found in thread {thread_id}",
            "SELECT i.item_data FROM chatkit_items i JOIN chatkit_threads t "
            "ON t.thread_id = i.thread_id "
            "WHERE i.thread_id = ? AND i.item_id = ? AND t.user_id = ?",
            thread_id,
            item_id,
            context.user_id,
        )
        return _ITEM.validate_json(row[0])

    async def delete_thread_item(self, thread_id: str, item_id: str, context: HasUserId) -> None:
        # Idempotent for a missing item: the SDK removes items it may never have saved.
        await self._check_owner(thread_id, context)
        await self._execute(
            "DELETE FROM chatkit_items WHERE thread_id = ? AND item_id = ?", thread_id, item_id
        )

    # -- feedback -----------------------------------------------------------

    async def save_feedback(
        self, thread_id: str, item_ids: Sequence[str], kind: FeedbackKind, context: HasUserId
    ) -> None:
        """Record the user's rating of items; the latest rating of an item wins."""
        await self._check_owner(thread_id, context)
        for item_id in item_ids:
            await self._one(
                f"Item {item_id} not found in thread {thread_id}",
                "INSERT INTO chatkit_feedback (thread_id, item_id, kind) "
                "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM chatkit_items "
                "WHERE thread_id = ? AND item_id = ?) "
                "ON CONFLICT (thread_id, item_id) DO UPDATE SET kind = excluded.kind, "
                "created_at = CURRENT_TIMESTAMP RETURNING kind",
                thread_id,
                item_id,
                kind,
                thread_id,
                item_id,
            )

    async def load_feedback(self, thread_id: str, context: HasUserId) -> dict[str, str]:
        """The ratings given in a thread, by item id."""
        await self._check_owner(thread_id, context)
        rows = await self._fetchall(
            "SELECT item_id, kind FROM chatkit_feedback WHERE thread_id = ?", thread_id
        )
        return {row[0]: row[1] for row in rows}

    # -- attachments --------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: HasUserId) -> None:
        if attachment.thread_id is not None:
            await self._check_owner(attachment.thread_id, context)
        await self._one(
            f"Attachment {attachment.id} not found",
            "INSERT INTO chatkit_attachments (attachment_id, user_id, thread_id, "
            "attachment_data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (attachment_id) DO UPDATE SET thread_id = excluded.thread_id, "
            "attachment_data = excluded.attachment_data "
            "WHERE chatkit_attachments.user_id = excluded.user_id RETURNING attachment_id",
            attachment.id,
            context.user_id,
            attachment.thread_id,
            self._json(_ATTACHMENT.dump_json(attachment).decode()),
        )

    async def load_attachment(self, attachment_id: str, context: HasUserId) -> Attachment:
        row = await self._one(
            f"Attachment {attachment_id} not found",
            "SELECT attachment_data FROM chatkit_attachments "
            "WHERE attachment_id = ? AND user_id = ?",
            attachment_id,
            context.user_id,
        )
        return _ATTACHMENT.validate_json(row[0])

    async def delete_attachment(self, attachment_id: str, context: HasUserId) -> None:
        await self._one(
            f"Attachment {attachment_id} not found",
            "DELETE FROM chatkit_attachments WHERE attachment_id = ? AND user_id = ? "
            "RETURNING attachment_id",
            attachment_id,
            context.user_id,
        )

    # -- agent session memory (the Agents SDK's session tables) -------------

    async def load_session_items(self, session_id: str, limit: int | None) -> list[Any]:
        """The newest `limit` messages of an agent session, oldest first."""
        rows = await self._fetchall(
            "SELECT message_data FROM agent_messages WHERE session_id = ? ORDER BY id DESC LIMIT ?",
            session_id,
            MAX_ID if limit is None else limit,
        )
        return [json.loads(row[0]) for row in reversed(rows)]

    async def add_session_items(self, session_id: str, items: Sequence[Any]) -> None:
        """Append messages to an agent session, creating the session on first use."""
        await self._execute(
            "INSERT INTO agent_sessions (session_id) VALUES (?) ON CONFLICT (session_id) "
            "DO UPDATE SET updated_at = CURRENT_TIMESTAMP",
            session_id,
        )
        await self._executemany(
            "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)",
            [(session_id, self._json(json.dumps(item, ensure_ascii=False))) for item in items],
        )

    async def pop_session_item(self, session_id: str) -> Any | None:
        """Remove and return the newest message of an agent session."""
        row = await self._fetchone(
            "DELETE FROM agent_messages WHERE id = (SELECT MAX(id) FROM agent_messages "
            "WHERE session_id = ?) RETURNING message_data",
            session_id,
        )
        return None if row is None else json.loads(row[0])

    async def clear_session(self, session_id: str) -> None:
        """Forget an agent session and its messages."""
        await self._execute("DELETE FROM agent_sessions WHERE session_id = ?", session_id)

    # -- helpers ------------------------------------------------------------

    async def _one(self, missing: str, sql: str, *args: Any) -> Row:
        """The statement's first row; `NotFoundError(missing)` when there is none."""
        row = await self._fetchone(sql, *args)
        if row is None:
            raise NotFoundError(missing)
        return row

    async def _check_owner(self, thread_id: str, context: HasUserId) -> None:
        await self._one(
            f"Thread {thread_id} not found",
            "SELECT 1 FROM chatkit_threads WHERE thread_id = ? AND user_id = ?",
            thread_id,
            context.user_id,
        )

    async def _cursor(self, after: str | None, order: str, sql: str, *args: Any) -> int:
        """The sequence number a page starts after; an unknown cursor is not found."""
        if not after:  # None, or the empty cursor of a last page sent back
            return 0 if order == "asc" else MAX_ID
        row = await self._fetchone(sql, *args)
        if row is None:
            raise NotFoundError(f"Cursor {after} not found")
        return int(row[0])


def _direction(order: str) -> tuple[str, str]:
    if order == "asc":
        return ">", "ASC"
    if order == "desc":
        return "<", "DESC"
    raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")


def _page_size(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return limit


def _page(rows: list[Row], limit: int, parse: Callable[[str], T]) -> Page[T]:
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        data=[parse(row[1]) for row in rows],
        has_more=has_more,
        after=rows[-1][0] if has_more else None,
    )
