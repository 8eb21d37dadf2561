"""Shared fixtures: the anyio backend, a scripted OpenAI API on 127.0.0.1, a store per backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from openai_mock import OpenAIMock

from tripchat.store import SQLStore, open_store

POSTGRES_URL_VAR = "TRIPCHAT_TEST_POSTGRES_URL"
needs_postgres = pytest.mark.skipif(
    not os.environ.get(POSTGRES_URL_VAR),
    reason=f"set {POSTGRES_URL_VAR}=postgresql://... to run the PostgreSQL tests (.ci/run does)",
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The SDKs under test run on asyncio, so the async tests do too."""
    return "asyncio"


@pytest.fixture
def openai_mock() -> Iterator[OpenAIMock]:
    """A fresh mock per test, so recorded requests never leak between tests."""
    with OpenAIMock() as mock:
        yield mock


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=needs_postgres,
        ),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL per backend: a fresh SQLite file, or the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db"
    return os.environ[POSTGRES_URL_VAR]


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SQLStore]:
    """An open store on an empty database; every test starts from nothing."""
    if not db_url.startswith("sqlite:"):
        await empty_postgres(db_url)
    opened = await open_store(db_url)
    try:
        yield opened
    finally:
        await opened.close()


async def empty_postgres(db_url: str) -> None:
    """Drop tripchat's tables so the next store starts from an empty, freshly made schema."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS chatkit_attachment_chunks, chatkit_attachment_files, "
            "chatkit_feedback, chatkit_attachments, chatkit_items, chatkit_threads, "
            "chatkit_leases, chatkit_deleted_threads, agent_messages, agent_sessions, "
            "tripchat_meta CASCADE"
        )
    finally:
        await conn.close()
