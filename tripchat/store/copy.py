"""Moving a deployment between databases: each table exported in key order and upserted.

Used by `tripchat migrate`. The SQL is the same on both drivers, like the contract's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .sql import Row, SQLStore


@dataclass(frozen=True)
class _CopySpec:
    """How one table is exported in key order and upserted: a re-run catches up on edits."""

    export_sql: str
    import_sql: str
    first_key: Any
    json_column: int | None


_COPY: dict[str, _CopySpec] = {
    "chatkit_threads": _CopySpec(
        "SELECT id, thread_id, user_id, thread_data FROM chatkit_threads "
        "WHERE id > ? ORDER BY id LIMIT ?",
        "INSERT INTO chatkit_threads (thread_id, user_id, thread_data) VALUES (?, ?, ?) "
        "ON CONFLICT (thread_id) DO UPDATE SET thread_data = excluded.thread_data",
        0,
        2,
    ),
    "chatkit_items": _CopySpec(
        "SELECT id, thread_id, item_id, item_type, item_data FROM chatkit_items "
        "WHERE id > ? ORDER BY id LIMIT ?",
        "INSERT INTO chatkit_items (thread_id, item_id, item_type, item_data) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (thread_id, item_id) "
        "DO UPDATE SET item_type = excluded.item_type, item_data = excluded.item_data",
        0,
        3,
    ),
    "chatkit_attachments": _CopySpec(
        "SELECT attachment_id, attachment_id, user_id, thread_id, attachment_data "
        "FROM chatkit_attachments WHERE attachment_id > ? ORDER BY attachment_id LIMIT ?",
        "INSERT INTO chatkit_attachments (attachment_id, user_id, thread_id, attachment_data) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (attachment_id) "
        "DO UPDATE SET attachment_data = excluded.attachment_data",
        "",
        3,
    ),
    "chatkit_attachment_files": _CopySpec(
        "SELECT attachment_id, attachment_id, state, size, created FROM chatkit_attachment_files "
        "WHERE attachment_id > ? ORDER BY attachment_id LIMIT ?",
        "INSERT INTO chatkit_attachment_files (attachment_id, state, size, created) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (attachment_id) "
        "DO UPDATE SET state = excluded.state, size = excluded.size",
        "",
        None,
    ),
    # Chunks are up to 256 KB: a batch of them is a fiftieth of the rows of other tables.
    "chatkit_attachment_chunks": _CopySpec(
        "SELECT id, attachment_id, seq, data FROM chatkit_attachment_chunks "
        "WHERE id > ? ORDER BY id LIMIT (? / 50 + 1)",
        "INSERT INTO chatkit_attachment_chunks (attachment_id, seq, data) VALUES (?, ?, ?) "
        "ON CONFLICT (attachment_id, seq) DO UPDATE SET data = excluded.data",
        0,
        None,
    ),
    "chatkit_feedback": _CopySpec(
        "SELECT i.id, f.thread_id, f.item_id, f.kind FROM chatkit_feedback f "
        "JOIN chatkit_items i ON i.thread_id = f.thread_id AND i.item_id = f.item_id "
        "WHERE i.id > ? ORDER BY i.id LIMIT ?",
        "INSERT INTO chatkit_feedback (thread_id, item_id, kind) VALUES (?, ?, ?) "
        "ON CONFLICT (thread_id, item_id) DO UPDATE SET kind = excluded.kind",
        0,
        None,
    ),
    "agent_sessions": _CopySpec(
        "SELECT session_id, session_id FROM agent_sessions "
        "WHERE session_id > ? ORDER BY session_id LIMIT ?",
        "INSERT INTO agent_sessions (session_id) VALUES (?) ON CONFLICT (session_id) DO NOTHING",
        "",
        None,
    ),
}
COPY_TABLES = tuple(_COPY)


def first_key(table: str) -> Any:
    """The key before the first row of `table`, to start an export."""
    return _COPY[table].first_key


async def export_rows(store: SQLStore, table: str, after: Any, limit: int) -> list[Row]:
    """A batch of `table` in key order after `after`; the first column is the key."""
    return await store._fetchall(_COPY[table].export_sql, after, limit)


async def import_rows(store: SQLStore, table: str, rows: Sequence[Row]) -> None:
    """Insert exported rows, updating those already there (safe to re-run)."""
    spec = _COPY[table]
    await store._executemany(
        spec.import_sql,
        [
            [store._json(v) if i == spec.json_column else v for i, v in enumerate(row[1:])]
            for row in rows
        ],
    )


async def count_rows(store: SQLStore) -> dict[str, int]:
    """How many rows each copied table holds, to check a copy."""
    rows = await store._fetchall(
        "SELECT 'chatkit_threads', COUNT(*) FROM chatkit_threads "
        "UNION ALL SELECT 'chatkit_items', COUNT(*) FROM chatkit_items "
        "UNION ALL SELECT 'chatkit_attachments', COUNT(*) FROM chatkit_attachments "
        "UNION ALL SELECT 'chatkit_attachment_files', COUNT(*) FROM chatkit_attachment_files "
        "UNION ALL SELECT 'chatkit_attachment_chunks', COUNT(*) FROM chatkit_attachment_chunks "
        "UNION ALL SELECT 'chatkit_feedback', COUNT(*) FROM chatkit_feedback "
        "UNION ALL SELECT 'agent_sessions', COUNT(*) FROM agent_sessions "
        "UNION ALL SELECT 'agent_messages', COUNT(*) FROM agent_messages"
    )
    return {row[0]: int(row[1]) for row in rows}


async def session_ids(store: SQLStore) -> list[str]:
    """Every agent session id, oldest first."""
    rows = await store._fetchall("SELECT session_id FROM agent_sessions ORDER BY created_at")
    return [row[0] for row in rows]
