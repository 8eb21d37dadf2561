"""Attachment bytes in the database, beside the threads that use them.

A file row per attachment holds its upload state (`pending` until its bytes arrive,
`uploading` while they stream in, `complete` after) and its creation time; the bytes are
chunks written as an upload streams in, so no process ever holds a whole file, and a
second process on PostgreSQL (or a backup) has them too. Both go with their attachment
record, which goes with its thread (ON DELETE CASCADE). Statements that act for a user
carry the owner, as in `sql`; the owner lookup by id alone is for signed URLs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .sql import HasUserId, SQLStore

_OWNED = "attachment_id IN (SELECT attachment_id FROM chatkit_attachments WHERE user_id = ?)"


async def add_file(store: SQLStore, attachment_id: str, created: int, *, uploading: bool) -> None:
    """The file row of a new attachment record: waiting for its bytes, or receiving them."""
    await store._execute(
        "INSERT INTO chatkit_attachment_files (attachment_id, state, created) VALUES (?, ?, ?)",
        attachment_id,
        "uploading" if uploading else "pending",
        created,
    )


async def owner(store: SQLStore, attachment_id: str) -> str | None:
    """Who owns the attachment, to check a signed URL that names only its id."""
    row = await store._fetchone(
        "SELECT user_id FROM chatkit_attachments WHERE attachment_id = ?", attachment_id
    )
    return None if row is None else str(row[0])


async def state(store: SQLStore, attachment_id: str, context: HasUserId) -> str | None:
    """`pending`, `uploading` or `complete`; None for an attachment the user does not have."""
    row = await store._fetchone(
        f"SELECT state FROM chatkit_attachment_files WHERE attachment_id = ? AND {_OWNED}",
        attachment_id,
        context.user_id,
    )
    return None if row is None else str(row[0])


async def claim(store: SQLStore, attachment_id: str, context: HasUserId) -> bool:
    """Start receiving a pending attachment's bytes; False if done or under way already."""
    row = await store._fetchone(
        "UPDATE chatkit_attachment_files SET state = 'uploading' "
        f"WHERE attachment_id = ? AND state = 'pending' AND {_OWNED} RETURNING attachment_id",
        attachment_id,
        context.user_id,
    )
    return row is not None


async def write_chunk(store: SQLStore, attachment_id: str, seq: int, data: bytes) -> None:
    """Append one chunk of an upload in progress."""
    await store._execute(
        "INSERT INTO chatkit_attachment_chunks (attachment_id, seq, data) VALUES (?, ?, ?)",
        attachment_id,
        seq,
        data,
    )


async def complete(store: SQLStore, attachment_id: str, size: int) -> None:
    """Mark an upload whole: from now on its bytes are readable and it can be sent."""
    await store._execute(
        "UPDATE chatkit_attachment_files SET state = 'complete', size = ? WHERE attachment_id = ?",
        size,
        attachment_id,
    )


async def reset(store: SQLStore, attachment_id: str) -> None:
    """Forget a failed upload's chunks; the attachment waits for its bytes again."""
    await store._execute(
        "DELETE FROM chatkit_attachment_chunks WHERE attachment_id = ?", attachment_id
    )
    await store._execute(
        "UPDATE chatkit_attachment_files SET state = 'pending', size = 0 WHERE attachment_id = ?",
        attachment_id,
    )


async def size(store: SQLStore, attachment_id: str, context: HasUserId) -> int | None:
    """The size of a complete attachment of the user's; None otherwise."""
    row = await store._fetchone(
        "SELECT size FROM chatkit_attachment_files "
        f"WHERE attachment_id = ? AND state = 'complete' AND {_OWNED}",
        attachment_id,
        context.user_id,
    )
    return None if row is None else int(row[0])


async def chunks(store: SQLStore, attachment_id: str, context: HasUserId) -> AsyncIterator[bytes]:
    """A complete attachment's bytes, a chunk at a time (nothing for an incomplete one)."""
    if await size(store, attachment_id, context) is None:
        return
    seq = 0
    while True:
        row = await store._fetchone(
            "SELECT data FROM chatkit_attachment_chunks WHERE attachment_id = ? AND seq = ?",
            attachment_id,
            seq,
        )
        if row is None:
            return
        yield bytes(row[0])
        seq += 1


async def read(store: SQLStore, attachment_id: str, context: HasUserId) -> bytes | None:
    """A complete attachment's bytes in one piece (for the model); None if unavailable."""
    data = b"".join([chunk async for chunk in chunks(store, attachment_id, context)])
    return data or None  # an empty file is never completed


async def sweep(store: SQLStore, created_before: int) -> int:
    """Delete attachments never sent in a message and created before then; how many."""
    rows = await store._fetchall(
        "DELETE FROM chatkit_attachments WHERE thread_id IS NULL AND attachment_id IN "
        "(SELECT attachment_id FROM chatkit_attachment_files WHERE created < ?) "
        "RETURNING attachment_id",
        created_before,
    )
    return len(rows)
