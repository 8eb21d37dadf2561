"""`tripchat migrate`: a SQLite deployment copied to PostgreSQL, twice, loses and
duplicates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from chatkit.store import NotFoundError
from chatkit.types import ThreadMetadata
from conftest import POSTGRES_URL_VAR, empty_postgres, needs_postgres
from test_store import (
    ALICE,
    BOB,
    add_messages,
    all_items,
    every_item_type,
    file_attachment,
    message,
)

from tripchat.context import RequestContext
from tripchat.store import SQLStore, open_store
from tripchat.store.copy import count_rows

pytestmark = [pytest.mark.anyio, needs_postgres]


async def fill(store: SQLStore) -> None:
    """A few hundred items of every type, for two users, with attachments, feedback, memory."""
    for n in range(24):
        user = ALICE if n % 3 else BOB
        thread_id = store.generate_thread_id(user)
        await store.save_thread(
            ThreadMetadata(id=thread_id, created_at=datetime(2025, 4, 1), title=f"trip {n}"), user
        )
        for item in every_item_type(thread_id):
            await store.add_thread_item(thread_id, item, user)
        if user is ALICE:
            messages = await add_messages(store, thread_id, 5)
            await store.save_feedback(thread_id, [messages[0].id], "positive", ALICE)
            await store.save_attachment(file_attachment(thread_id, f"atc_{n}"), ALICE)
    for n in range(3):
        turns = [{"role": "user", "content": f"hi {i}"} for i in range(4)]
        await store.add_session_items(f"cli_{n}", turns)


async def snapshot(store: SQLStore) -> dict[str, object]:
    """Everything a user can see, per user, in order."""
    seen: dict[str, object] = {"counts": await count_rows(store)}
    for user in (ALICE, BOB):
        threads = (await store.load_threads(1000, None, "asc", user)).data
        seen[user.user_id] = [
            (
                thread,
                await all_items(store, thread.id, "asc", user),
                await store.load_feedback(thread.id, user),
            )
            for thread in threads
        ]
    seen["attachments"] = [
        await store.load_attachment(f"atc_{n}", ALICE) for n in range(24) if n % 3
    ]
    seen["sessions"] = [await store.load_session_items(f"cli_{n}", None) for n in range(3)]
    return seen


def run_migrate(source: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tripchat.cli",
            "migrate",
            "--from",
            source,
            "--to",
            target,
            "--batch",
            "37",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def filled_source(tmp_path: Path) -> tuple[str, str]:
    """A filled SQLite source and the empty PostgreSQL target: their URLs."""
    source = f"sqlite:///{tmp_path}/old.db"
    target = os.environ[POSTGRES_URL_VAR]
    await empty_postgres(target)
    async with await open_store(source) as store:
        await fill(store)
    return source, target


async def test_migrate_sqlite_to_postgres_twice(tmp_path: Path) -> None:
    source, target = await filled_source(tmp_path)
    async with await open_store(source) as store:
        expected = await snapshot(store)
    assert expected["counts"]["chatkit_items"] > 300  # type: ignore[index]

    for attempt in range(2):
        done = run_migrate(source, target)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "both sides hold the same numbers" in done.stdout
        async with await open_store(target) as store:
            assert await snapshot(store) == expected, f"run {attempt + 1}"

    async with await open_store(target) as store:  # the copy is a working store
        thread = (await store.load_threads(1, None, "desc", ALICE)).data[0]
        await add_messages(store, thread.id, 1)
        with pytest.raises(NotFoundError):
            await store.load_thread(thread.id, RequestContext("mallory"))


async def test_a_second_run_catches_up_on_what_changed_in_between(tmp_path: Path) -> None:
    """Turns go on while the first copy runs: the re-run before the switch brings them over."""
    source, target = await filled_source(tmp_path)
    assert run_migrate(source, target).returncode == 0

    async with await open_store(source) as store:
        thread = (await store.load_threads(1, None, "desc", ALICE)).data[0]
        thread.title = "renamed after the first copy"
        await store.save_thread(thread, ALICE)
        edited = message(thread.id, "msg_0000", "edited after the first copy")
        await store.save_item(thread.id, edited, ALICE)
        await store.save_feedback(thread.id, ["msg_0001"], "negative", ALICE)
        await store.add_thread_item(thread.id, message(thread.id, "msg_new", "a new turn"), ALICE)
        await store.add_session_items("cli_0", [{"role": "user", "content": "one more"}])
        expected = await snapshot(store)

    done = run_migrate(source, target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "both sides hold the same numbers" in done.stdout
    async with await open_store(target) as store:
        assert await snapshot(store) == expected
