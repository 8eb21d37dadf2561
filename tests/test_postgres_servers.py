"""Two real `tripchat serve` processes on one PostgreSQL database, as a scaled-out deployment.

A conversation moves freely between the servers (its history comes from the shared
database), owners stay separated, a burst of concurrent turns lands intact and in order,
and servers that start together race safely to create the schema.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from chatkit_client import (
    add_message,
    assistant_text,
    create_thread,
    encode,
    get_thread,
    message_texts,
    parse_sse,
    thread_id_of,
)
from conftest import POSTGRES_URL_VAR, empty_postgres, needs_postgres
from openai_mock import OpenAIMock
from servers import ServerProcess, app_env
from test_store import image_attachment, message, new_thread

from tripchat.context import RequestContext
from tripchat.store import SCHEMA_VERSION, PostgresStore, blobs

pytestmark = [
    pytest.mark.anyio,
    needs_postgres,
]

TEST_SECONDS = 40.0
CONVERSATIONS = 100
REPLY_TOKENS = 3
RACING_STORES = 8
EXIT_SECONDS = 10.0
WHOLE_LOG = 10**8
USER_HEADER = "X-User-Id"
POOL = 6
SESSION_STATE = """
SELECT (SELECT count(*) FROM pg_settings WHERE source = 'session') AS settings,
       (SELECT count(*) FROM pg_listening_channels()) AS listening,
       (SELECT count(*) FROM pg_cursors WHERE name <> '') AS cursors,
       (SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks,
       (SELECT count(*) FROM pg_class
         WHERE relpersistence = 't' AND relnamespace = pg_my_temp_schema()) AS temp_tables
"""
"""What a connection could carry from one request to the next: none of it may be there."""
ACCESS_5XX = re.compile(r'"[A-Z]+ \S+ [0-9.]+" 5\d\d ')
"""A Hypercorn access-log line for a 5xx answer: `"POST /chatkit 1.1" 500 ...`."""


# -- helpers -------------------------------------------------------------------------------


def words(count: int) -> str:
    """The text the mock streams for `[tokens count]`."""
    return "".join(f"w{i} " for i in range(count))


def unique(label: str, tokens: int = REPLY_TOKENS) -> str:
    """A user message no other request carries, asking for a `tokens`-word reply."""
    return f"{label} {uuid.uuid4().hex[:12]} [tokens {tokens}]"


def pg_env(openai_base_url: str, db_url: str) -> dict[str, str]:
    """The app's variables against the OpenAI mock, with `db_url` as the database."""
    return app_env(
        openai_base_url, Path("unused.db"), CHATKIT_DB_URL=db_url, CHATKIT_MODEL_MAX_RETRIES="0"
    )


@contextmanager
def running(servers: Sequence[ServerProcess]) -> Iterator[Sequence[ServerProcess]]:
    """Start every server at once, wait until all are healthy, stop them all afterwards."""
    with ExitStack() as stack:
        for server in servers:
            stack.callback(server.stop)
            server.start()
        for server in servers:
            server.wait_ready()
        yield servers


def assert_clean_log(server: ServerProcess) -> None:
    """The server's whole log has no traceback and no 5xx answer."""
    log = server.log(WHOLE_LOG)
    assert "Traceback" not in log, log[-6000:]
    assert not ACCESS_5XX.findall(log), log[-6000:]


def http_client() -> httpx.AsyncClient:
    """An httpx client that ignores proxy variables, never waits unbounded, pools widely."""
    limits = httpx.Limits(max_connections=2 * CONVERSATIONS, max_keepalive_connections=None)
    return httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30.0), limits=limits)


async def post(
    client: httpx.AsyncClient, server: ServerProcess, request: dict[str, Any], user: str
) -> httpx.Response:
    """POST a ChatKit request to `server` as `user`."""
    headers = {USER_HEADER: user}
    return await client.post(f"{server.url}/chatkit", content=encode(request), headers=headers)


async def call(
    client: httpx.AsyncClient, server: ServerProcess, request: dict[str, Any], user: str
) -> dict[str, Any]:
    """A non-streaming request answered 200 with JSON."""
    response = await post(client, server, request, user)
    assert response.status_code == 200, response.text[:500]
    return dict(response.json())


async def turn(
    client: httpx.AsyncClient,
    server: ServerProcess,
    request: dict[str, Any],
    user: str,
    tokens: int = REPLY_TOKENS,
) -> str:
    """A streamed turn that ends well with the scripted reply; the thread's id."""
    response = await post(client, server, request, user)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.content)
    errors = [event for event in events if event.get("type") == "error"]
    assert not errors, errors
    assert assistant_text(events) == words(tokens), events
    return thread_id_of(events)


def model_request_with(mock: OpenAIMock, text: str) -> str:
    """The (JSON) body of the one model request whose input carries `text`."""
    bodies = [json.dumps(record.body) for record in list(mock.requests)]
    found = [body for body in bodies if text in body]
    assert len(found) == 1, f"{len(found)} model requests carry {text!r}"
    return found[0]


async def saved_conversations(db_url: str) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Straight from PostgreSQL: each thread's owner and its messages in stored order."""
    conn = await asyncpg.connect(db_url)
    try:
        threads = await conn.fetch("SELECT thread_id, user_id FROM chatkit_threads ORDER BY id")
        items = await conn.fetch(
            "SELECT thread_id, item_data::text AS data FROM chatkit_items ORDER BY id"
        )
    finally:
        await conn.close()
    saved = {row["thread_id"]: (row["user_id"], []) for row in threads}
    for row in items:
        saved[row["thread_id"]][1].extend(message_texts([json.loads(row["data"])]))
    return saved


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def empty_db() -> str:
    """The test PostgreSQL database, emptied: the servers create the schema themselves."""
    url = os.environ[POSTGRES_URL_VAR]
    await empty_postgres(url)
    return url


@pytest.fixture
def pair(
    openai_mock: OpenAIMock, empty_db: str, tmp_path: Path
) -> Iterator[Sequence[ServerProcess]]:
    """Two `tripchat serve` processes on the one database, both against the mock."""
    env = pg_env(openai_mock.base_url, empty_db)
    servers = [ServerProcess(env, workdir=tmp_path, name=f"server{n}") for n in (1, 2)]
    with running(servers):
        yield servers
    for server in servers:
        assert_clean_log(server)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """One HTTP client for all servers of a test."""
    async with http_client() as opened:
        yield opened


# -- tests ---------------------------------------------------------------------------------


async def test_a_thread_continues_on_the_other_server(
    pair: Sequence[ServerProcess], client: httpx.AsyncClient, openai_mock: OpenAIMock
) -> None:
    first, second = pair
    opening, follow_up = unique("alice opens", 4), unique("alice follows up", 2)
    with anyio.fail_after(TEST_SECONDS):
        thread_id = await turn(client, first, create_thread(opening), "alice", tokens=4)

        listed = await call(client, second, {"type": "threads.list", "params": {}}, "alice")
        assert [thread["id"] for thread in listed["data"]] == [thread_id]
        thread = await call(client, second, get_thread(thread_id), "alice")
        first_turn = [("user_message", opening), ("assistant_message", words(4))]
        assert message_texts(thread["items"]["data"]) == first_turn

        await turn(client, second, add_message(thread_id, follow_up), "alice", tokens=2)
        # Server 2 never saw the first turn: its model input came from the shared database.
        body = model_request_with(openai_mock, follow_up)
        assert body.index(opening) < body.index(words(4)) < body.index(follow_up), body
        thread = await call(client, first, get_thread(thread_id), "alice")
        both_turns = [*first_turn, ("user_message", follow_up), ("assistant_message", words(2))]
        assert message_texts(thread["items"]["data"]) == both_turns

        for server in pair:
            stranger = await post(client, server, get_thread(thread_id), "bob")
            assert stranger.status_code == 404, stranger.text
            intrusion = await post(client, server, add_message(thread_id, "hi [tokens 1]"), "bob")
            assert intrusion.status_code == 404, intrusion.text
            listed = await call(client, server, {"type": "threads.list", "params": {}}, "bob")
            assert listed["data"] == []


async def test_concurrent_conversations_alternate_servers_and_land_in_order(
    pair: Sequence[ServerProcess], client: httpx.AsyncClient, empty_db: str
) -> None:
    expected: dict[str, tuple[str, list[tuple[str, str]]]] = {}

    async def converse(n: int) -> None:
        user = f"traveller-{n:03d}"
        texts = [unique(f"conversation {n:03d} turn {t}") for t in (1, 2)]
        thread_id = await turn(client, pair[n % 2], create_thread(texts[0]), user)
        await turn(client, pair[(n + 1) % 2], add_message(thread_id, texts[1]), user)
        messages: list[tuple[str, str]] = []
        for text in texts:
            messages += [("user_message", text), ("assistant_message", words(REPLY_TOKENS))]
        expected[thread_id] = (user, messages)

    with anyio.fail_after(TEST_SECONDS):
        async with anyio.create_task_group() as group:
            for n in range(CONVERSATIONS):
                group.start_soon(converse, n)
        saved = await saved_conversations(empty_db)

    assert len(expected) == CONVERSATIONS
    kinds = [kind for _, messages in saved.values() for kind, _ in messages]
    assert (len(saved), kinds.count("user_message"), kinds.count("assistant_message")) == (
        CONVERSATIONS,
        2 * CONVERSATIONS,
        2 * CONVERSATIONS,
    )
    assert saved == expected


async def test_servers_started_together_on_an_empty_database_both_come_up(
    openai_mock: OpenAIMock, empty_db: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    env = pg_env(openai_mock.base_url, empty_db)
    servers = [ServerProcess(env, workdir=tmp_path, name=f"racer{n}") for n in (1, 2)]
    with running(servers):
        for server in servers:
            health = await client.get(f"{server.url}/healthz")
            assert health.json() == {"status": "ok", "database": "ok"}, health.text
    for server in servers:
        assert_clean_log(server)
    conn = await asyncpg.connect(empty_db)
    try:
        versions = await conn.fetch("SELECT value FROM tripchat_meta WHERE key = 'schema_version'")
    finally:
        await conn.close()
    assert [row["value"] for row in versions] == [str(SCHEMA_VERSION)]


async def test_stores_opening_at_once_on_an_empty_database_all_succeed(empty_db: str) -> None:
    # A tighter race than two processes can make: without the advisory lock, concurrent
    # CREATE TABLE IF NOT EXISTS fails with duplicate-key errors from the catalogue.
    with anyio.fail_after(TEST_SECONDS):
        stores = await asyncio.gather(
            *(PostgresStore.open(empty_db, pool_size=1) for _ in range(RACING_STORES)),
            return_exceptions=True,
        )
        opened = [store for store in stores if isinstance(store, PostgresStore)]
        for store in opened:
            await store.ping()
            await store.close()
    assert len(opened) == RACING_STORES, stores


async def every_store_call(store: PostgresStore, n: int) -> None:
    """One user's worth of every kind of statement the store makes."""
    user = RequestContext(f"user-{n}")
    thread = await new_thread(store, user)
    lease = await store.take_lease(user.user_id, thread.id, 2, 30.0)
    assert not isinstance(lease, str), lease
    await store.add_thread_items(
        thread.id, [message(thread.id, f"m{i}", "hi") for i in range(3)], user
    )
    await store.load_thread_items(thread.id, "m0", 2, "asc", user)
    attachment = image_attachment(None, f"atc_{n}")
    await store.save_attachment(attachment, user)
    await blobs.add_file(store, attachment.id, 0, uploading=True)
    await blobs.write_chunk(store, attachment.id, 0, b"png")
    await blobs.complete(store, attachment.id, 3)
    assert await blobs.read(store, attachment.id, user) == b"png"
    await store.save_attachment(image_attachment(thread.id, attachment.id), user)
    await store.save_feedback(thread.id, ["m1"], "positive", user)
    await store.load_feedback(thread.id, user)
    await store.update_thread(thread.model_copy(update={"title": "trip"}), user)
    await store.load_threads(5, None, "desc", user)
    await store.save_item(thread.id, message(thread.id, "m1", "edited"), user)
    await store.load_item(thread.id, "m1", user)
    await store.delete_thread_item(thread.id, "m2", user)
    await store.add_session_items(thread.id, [{"role": "user", "content": "hi"}])
    await store.pop_session_item(thread.id)
    await store.clear_session(thread.id)
    assert await store.renew_lease(lease, 30.0) == "held"
    await store.release_lease(lease)
    await store.delete_thread(thread.id, user)
    spare = image_attachment(None, f"atc_spare_{n}")
    await store.save_attachment(spare, user)
    await store.delete_attachment(spare.id, user)
    await store.secret_key()
    await blobs.sweep(store, 0)


async def test_connections_go_back_to_the_pool_as_they_came(empty_db: str) -> None:
    """The pool does not reset a connection it takes back (`_keep_session`, one round trip
    and four statements saved per statement), so no statement of ours may leave a setting,
    a LISTEN, a cursor, a session advisory lock or a temporary table for the next request
    to meet. Every kind of statement runs, many at once, then every pooled connection is
    looked at."""
    store = await PostgresStore.open(empty_db, pool_size=POOL)
    try:
        with anyio.fail_after(TEST_SECONDS):
            async with anyio.create_task_group() as group:
                for n in range(4 * POOL):
                    group.start_soon(every_store_call, store, n)
            async with AsyncExitStack() as held:
                pool = store._pool  # every connection at once, so each is looked at
                conns = [await held.enter_async_context(pool.acquire()) for _ in range(POOL)]
                states = [dict(await conn.fetchrow(SESSION_STATE)) for conn in conns]
    finally:
        await store.close()
    clean = {"settings": 0, "listening": 0, "cursors": 0, "advisory_locks": 0, "temp_tables": 0}
    assert states == [clean] * POOL, states
