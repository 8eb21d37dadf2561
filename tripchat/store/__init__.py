"""Durable ChatKit store: the contract written once in SQL, run on SQLite or PostgreSQL.

`sql` holds the contract; `sqlite` and `postgres` are the drivers, each knowing only
its database; `open_store` picks one from `CHATKIT_DB_URL`. The store knows nothing of
HTTP or of the model.
"""

from __future__ import annotations

from ..config import check_db_url
from .leases import Lease, LeaseStore
from .postgres import PostgresStore
from .sql import SCHEMA_VERSION, HasUserId, SQLStore
from .sqlite import SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "HasUserId",
    "Lease",
    "LeaseStore",
    "PostgresStore",
    "SQLStore",
    "SQLiteStore",
    "open_store",
]


async def open_store(db_url: str, *, pool_size: int = 10) -> SQLStore:
    """Open the store a `CHATKIT_DB_URL` names: SQLite or PostgreSQL."""
    url = check_db_url(db_url)
    if url.startswith("sqlite:"):
        return await SQLiteStore.open(url)
    return await PostgresStore.open(url, pool_size=pool_size)
