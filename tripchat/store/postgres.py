"""The PostgreSQL store: the same `SQLStore` contract on an asyncpg connection pool.

Only what differs between the databases lives here: placeholders (`$1` for `?`), a
pool instead of one connection, the schema twin with `jsonb`, versioning without
`PRAGMA user_version`, and jsonb's refusal of the NUL character.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

from ..config import ConfigError
from .sql import SCHEMA_VERSION, Row, SQLStore, load_schema

_PLACEHOLDER = re.compile(r"\?")
# A JSON `\u0000` escape, not the escaped backslash of a user's literal text "\u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
# Serialises schema set-up across processes that start together.
_SCHEMA_LOCK = 7_311_020_251_125
CONNECT_SECONDS = 10.0


@lru_cache(maxsize=256)
def to_postgres(sql: str) -> str:
    """The shared `?`-style SQL in PostgreSQL's numbered `$n` style."""
    counter = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Documents travel as JSON text, exactly as the SQLite store reads and writes them.
    for name in ("jsonb", "json"):
        await conn.set_type_codec(
            name, encoder=str, decoder=str, schema="pg_catalog", format="text"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: tripchat never changes a
    session (no SET, LISTEN, cursors or session advisory locks; the schema lock is a
    transaction's). asyncpg still rolls back a transaction left open before calling this.
    Its default reset query instead costs a round trip and four statements on every
    release, which with the pool's one-statement shortcuts doubled a turn's round trips."""


class PostgresStore(SQLStore):
    """For more than one process or machine: every server shares one database."""

    _now_sql = "extract(epoch FROM clock_timestamp())::float8"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, db_url: str, *, pool_size: int = 10) -> PostgresStore:
        """Connect a pool and apply `schema.postgres.sql` once, under an advisory lock."""
        where = urlsplit(db_url)
        try:
            pool = await asyncpg.create_pool(
                db_url,
                min_size=1,
                max_size=pool_size,
                init=_init_connection,
                reset=_keep_session,
                timeout=CONNECT_SECONDS,
                command_timeout=60,
            )
        # ValueError: a parameter asyncpg refuses (say, `?sslmode=bogus`).
        except (
            OSError,
            TimeoutError,
            ValueError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            raise ConfigError(
                f"CHATKIT_DB_URL: cannot connect to PostgreSQL at "
                f"{where.hostname}:{where.port or 5432}: {exc}"
            ) from None
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                version = None
                if await conn.fetchval("SELECT to_regclass('tripchat_meta') IS NOT NULL"):
                    version = await conn.fetchval(
                        "SELECT value FROM tripchat_meta WHERE key = 'schema_version'"
                    )
                if version is not None and int(version) > SCHEMA_VERSION:
                    raise ConfigError(
                        f"CHATKIT_DB_URL: the database has schema version {version}, newer "
                        f"than this tripchat ({SCHEMA_VERSION}); upgrade tripchat"
                    )
                await conn.execute(load_schema("schema.postgres.sql"))
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    def _json(self, text: str) -> str:
        # jsonb cannot hold U+0000; store the replacement character instead.
        return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if "u0000" in text else text

    async def _fetchall(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._pool.fetch(to_postgres(sql), *_text(args)))

    async def _fetchone(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._pool.fetchrow(to_postgres(sql), *_text(args))
        return row

    async def _execute(self, sql: str, *args: Any) -> None:
        await self._pool.execute(to_postgres(sql), *_text(args))

    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(to_postgres(sql), [_text(row) for row in rows])


def _text(args: Sequence[Any]) -> Sequence[Any]:
    """Parameters as PostgreSQL text can hold them: U+0000 (say, in a client's id) as U+FFFD.

    Ids we generate never hold either, so such an id is simply not found, as on SQLite.
    """
    if not any(isinstance(arg, str) and "\x00" in arg for arg in args):
        return args
    return [arg.replace("\x00", "\ufffd") if isinstance(arg, str) else arg for arg in args]
