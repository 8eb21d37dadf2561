"""Move a deployment between databases: `tripchat migrate --from URL --to URL`.

Copies every thread, item, attachment record, feedback and agent session in key order
and in batches, keeping ids and order. Rows already in the target are updated in place,
so an interrupted or repeated run is safe and catches up on what changed in between
(deletions excepted: the count check then shows them). Ends by comparing row counts.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import ConfigError
from .store import SQLStore, open_store
from .store.copy import (
    COPY_TABLES,
    count_rows,
    export_rows,
    first_key,
    import_rows,
    session_ids,
)


async def copy_table(source: SQLStore, target: SQLStore, table: str, batch: int) -> int:
    """Copy one table batch by batch; returns how many rows were read."""
    key, copied = first_key(table), 0
    while rows := await export_rows(source, table, key, batch):
        await import_rows(target, table, rows)
        copied += len(rows)
        key = rows[-1][0]
    return copied


async def copy_sessions(source: SQLStore, target: SQLStore) -> int:
    """Append to each target session the messages it lacks (they have no natural key)."""
    copied = 0
    for session_id in await session_ids(source):
        messages = await source.load_session_items(session_id, None)
        have = len(await target.load_session_items(session_id, None))
        await target.add_session_items(session_id, messages[have:])
        copied += len(messages) - have
    return copied


async def _open(db_url: str, flag: str) -> SQLStore:
    """The store for a command-line URL; its errors name the flag, not the variable."""
    try:
        return await open_store(db_url)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("CHATKIT_DB_URL", flag, 1)) from None


async def migrate(
    source_url: str, target_url: str, *, batch: int = 500, say: Callable[[str], None] = print
) -> bool:
    """Copy everything from source to target; True when both sides then hold the same counts."""
    async with (
        await _open(source_url, "--from") as source,
        await _open(target_url, "--to") as target,
    ):
        for table in COPY_TABLES:
            say(f"{table}: {await copy_table(source, target, table, batch)} rows read")
        say(f"agent_messages: {await copy_sessions(source, target)} rows added")
        before, after = await count_rows(source), await count_rows(target)
    same = before == after
    for table, count in before.items():
        mark = "ok" if count == after[table] else "MISMATCH"
        say(f"check {table}: source {count}, target {after[table]} {mark}")
    say("check: both sides hold the same numbers" if same else "check: counts differ")
    return same
