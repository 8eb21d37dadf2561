"""The embedded default driver: SQLite through one aiosqlite connection."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite

from ..config import ConfigError, check_db_url
from .sql import SCHEMA_VERSION, Row, SQLStore, load_schema


def sqlite_path(db_url: str) -> str:
    """The file path of a `sqlite:///` URL (`:memory:` stays as is)."""
    return check_db_url(db_url).removeprefix("sqlite:///")


def _try_open(path: str) -> None:
    sqlite3.connect(path).close()


class SQLiteStore(SQLStore):
    """The embedded default: one aiosqlite connection in autocommit, WAL journal.

    Every write is a single statement, so autocommit makes each one atomic without
    holding a lock across awaits; one connection serialises them, so the process
    never meets "database is locked", and the busy timeout covers other processes.
    """

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(cls, db_url: str) -> SQLiteStore:
        """Open (creating if needed) the database and apply `schema.sql`."""
        path = sqlite_path(db_url)
        try:
            # Tried synchronously first: a failed aiosqlite connect leaves its worker thread
            # to report to the event loop, which may be closed by then (a traceback at exit).
            await asyncio.to_thread(_try_open, path)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"CHATKIT_DB_URL: cannot open SQLite database {path}: {exc}"
            ) from None
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA busy_timeout = 10000")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            (version,) = next(iter(await conn.execute_fetchall("PRAGMA user_version")))
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"CHATKIT_DB_URL: {path} has schema version {version}, newer than "
                    f"this tripchat ({SCHEMA_VERSION}); upgrade tripchat"
                )
            await conn.executescript(load_schema())
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise ConfigError(f"CHATKIT_DB_URL: cannot use {path}: {exc}") from None
            raise
        return cls(conn, path)

    async def close(self) -> None:
        # Fold the WAL back into the main file so nothing is left needing recovery.
        try:
            await self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            await self._conn.close()

    async def _fetchall(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, args))

    async def _fetchone(self, sql: str, *args: Any) -> Row | None:
        rows = await self._conn.execute_fetchall(sql, args)
        return next(iter(rows), None)

    async def _execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute_fetchall(sql, args)

    async def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # One call into aiosqlite's thread, so no other statement runs in between. The
        # cursor is closed in that thread too: dropped on the event loop's, it resets its
        # cached statement while the next caller may be running it ("API misuse").
        async with self._conn.executemany(sql, rows):
            pass
