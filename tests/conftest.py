"""Shared fixtures: the anyio backend, a scripted OpenAI API on 127.0.0.1, a store per backend."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from openai_mock import OpenAIMock

from tripchat.store import SQLStore, open_store

POSTGRES_URL_VAR = "TRIPCHAT_TEST_POSTGRES_URL"
needs_postgres = pytest.mark.skipif(
    not os.environ.get(POSTGRES_URL_VAR),
    reason=f"set {POSTGRES_URL_VAR}=postgresql://... to run the PostgreSQL tests (.ci/run does)",
)
XDIST_WORKER = re.compile(r"gw\d+")
"""pytest-xdist's worker ids (PYTEST_XDIST_WORKER): gw0, gw1, ..."""
WORKER_DATABASE = pytest.StashKey[tuple[str, str]]()
"""The server URL and name of this worker's own database, to drop it at the end."""
LONG_FILES = ("test_fuzz.py", "test_deploy.py", "test_workers.py", "test_reliability.py")
"""The files that take longest (`pytest --durations`), run first: pytest-xdist hands out
whole files in collection order (`--dist loadfile --no-loadscope-reorder`), so none of them
is left running alone on one worker at the end while the other worker idles."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put LONG_FILES first, in that order; each file's tests keep theirs (a stable sort)."""
    ranks = {name: rank for rank, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: ranks.get(item.path.name, len(LONG_FILES)))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, point this worker at a PostgreSQL database of its own.

    Tests empty the database and servers share it, so two workers on one database would
    drop each other's tables. Rewriting the variable here, before any test module is
    imported, covers every reader of it (fixtures, tests and the servers they start).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    # The run's id (a uuid4 hex) too: two runs on one server must not share one either.
    run = re.sub(r"[^0-9a-z]", "", os.environ.get("PYTEST_XDIST_TESTRUNUID", "").lower())
    url = os.environ.get(POSTGRES_URL_VAR)
    if url and XDIST_WORKER.fullmatch(worker):
        name = f"tripchat_{worker}_{run[:12]}"
        config.stash[WORKER_DATABASE] = (url, name)
        asyncio.run(worker_database(url, name, create=True))
        os.environ[POSTGRES_URL_VAR] = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop the worker's database again, so a developer's server keeps no leftovers."""
    if WORKER_DATABASE in config.stash:
        url, name = config.stash[WORKER_DATABASE]
        asyncio.run(worker_database(url, name, create=False))


async def worker_database(url: str, name: str, *, create: bool) -> None:
    """Drop database `name` on `url`'s server if it is there; then, with `create`, make it
    anew and empty."""
    conn = await asyncpg.connect(url)
    try:
        # Identifiers cannot be query parameters; `name` is made of [a-z0-9_], quoted anyway.
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


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
