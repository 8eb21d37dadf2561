"""Reliability of the whole stack: load, a crash, upstream faults, and users kept apart.

Load, crash and faults run `tripchat serve` as a real process against the OpenAI mock and
check what a user would see (every stream, every error event) and what the SQLite file
keeps. Isolation runs in-process, where it is fast: another user gets a 404 for every
operation on someone else's thread, and the thread stays exactly as it was.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from chatkit.types import ClientToolCallItem
from chatkit_client import (
    SSEDecoder,
    add_message,
    assistant_text,
    create_thread,
    encode,
    get_thread,
    is_text_delta,
    message_texts,
    thread_id_of,
)
from openai_mock import OpenAIMock
from servers import HOST, ServerProcess, app_env, free_port
from test_asgi import Client, error_message
from test_fuzz import app_client
from test_http import Turn, call, http_client, saved_messages, stream_turn, unique, words
from test_partial import MID_REPLY_FAULTS
from test_server import request, user_input

from tripchat.config import Settings
from tripchat.context import RequestContext

pytestmark = pytest.mark.anyio

CONVERSATIONS = 200
TURNS = 3
REPLY_TOKENS = 5
LOAD_SECONDS = 60.0
"""The whole load (600 turns through one process on two cores) must end well before this."""
LOAD_READ_SECONDS = 30.0
KEEPALIVE_SECONDS = 1.0
"""The client drops idle connections long before the server's keep-alive ends: reusing one
just as the server closes it loses the request (an HTTP/1.1 race no server can prevent), as
a proxy in front must also ensure."""
ACCESS_LINE = re.compile(r'hypercorn\.access .* "POST /chatkit 1\.1" (\S+)')
TEST_SECONDS = 30.0
FAULT_SECONDS = 4.0
"""An upstream fault ends the stream within this; a `[stall 5]` would take longer."""
KILL_SECONDS = 5.0
BAD_LOG_LINES = ("database is locked", "Traceback")


@pytest.fixture(scope="module")
def mock() -> Iterator[OpenAIMock]:
    """One mock for the module's servers; tests tell their requests apart by their text."""
    with OpenAIMock() as running:
        yield running


def sqlite_file(server: ServerProcess) -> Path:
    """The SQLite file a server was started on."""
    return Path(server.env["CHATKIT_DB_URL"].removeprefix("sqlite:///"))


def saved_threads(db: Path) -> dict[str, list[tuple[str, str]]]:
    """Every thread's messages in order, read straight from the SQLite file."""
    threads: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with closing(sqlite3.connect(db)) as conn:
        for thread_id, data in conn.execute(
            "SELECT thread_id, item_data FROM chatkit_items ORDER BY id"
        ):
            threads[thread_id].append(json.loads(data))
    return {thread_id: message_texts(items) for thread_id, items in threads.items()}


def assert_clean_log(server: ServerProcess) -> None:
    """No lock contention and no traceback anywhere in the server's output."""
    log = server.log_path.read_text(errors="replace")
    for bad in BAD_LOG_LINES:
        assert bad not in log, f"{bad!r} in the server log:\n{server.log()}"


def assert_completed(turn: Turn, tokens: int) -> None:
    """The stream carried the whole reply and no error."""
    errors = [event for event in turn.events if event["type"] == "error"]
    assert not errors, errors
    assert assistant_text(turn.events) == words(tokens)


def unanswered_then_answered(first: str, follow_up: str) -> list[tuple[str, str]]:
    """A thread whose first message got no reply and whose `[tokens 3]` follow-up did."""
    return [("user_message", first), ("user_message", follow_up), ("assistant_message", words(3))]


# -- load ------------------------------------------------------------------------------


def load_text(conversation: int, turn: int) -> str:
    """The user's message in one turn of one conversation of the load test."""
    return f"conversation {conversation} turn {turn} [tokens {REPLY_TOKENS}]"


def access_statuses(server: ServerProcess) -> list[str]:
    """The status of every POST /chatkit the server read, from its access log ("-": none)."""
    log = server.log_path.read_text(errors="replace")
    return ACCESS_LINE.findall(log)


async def test_200_concurrent_conversations_of_3_turns(mock: OpenAIMock, tmp_path: Path) -> None:
    env = app_env(mock.base_url, tmp_path / "load.db")
    limits = httpx.Limits(
        max_connections=CONVERSATIONS,
        max_keepalive_connections=CONVERSATIONS,
        keepalive_expiry=KEEPALIVE_SECONDS,
    )
    threads: dict[int, str] = {}
    streams = {"open": 0, "peak": 0}

    async def converse(client: httpx.AsyncClient, url: str, conversation: int) -> None:
        thread_id: str | None = None
        for turn in range(TURNS):
            text = load_text(conversation, turn)
            body = create_thread(text) if thread_id is None else add_message(thread_id, text)
            streams["open"] += 1
            streams["peak"] = max(streams["peak"], streams["open"])
            try:
                user = {"X-User-Id": f"load-{conversation}"}  # 200 users, a conversation each
                result = await stream_turn(client, url, body, user)
            finally:
                streams["open"] -= 1
            assert result.http_version == "HTTP/1.1"
            assert_completed(result, REPLY_TOKENS)
            thread_id = thread_id or thread_id_of(result.events)
        assert thread_id is not None
        threads[conversation] = thread_id

    with ServerProcess(env, workdir=tmp_path, name="load") as server:
        started = time.monotonic()
        with anyio.fail_after(LOAD_SECONDS):
            async with (
                httpx.AsyncClient(
                    trust_env=False, timeout=httpx.Timeout(LOAD_READ_SECONDS), limits=limits
                ) as client,
                anyio.create_task_group() as group,
            ):
                for conversation in range(CONVERSATIONS):
                    group.start_soon(converse, client, server.url, conversation)
        elapsed = time.monotonic() - started
        assert server.stop() == 0, server.log()
    print(f"{CONVERSATIONS * TURNS} turns in {elapsed:.1f}s, {streams['peak']} at once")
    assert streams["peak"] > CONVERSATIONS // 2, "the conversations did not overlap"
    assert access_statuses(server) == ["200"] * (CONVERSATIONS * TURNS)
    assert_clean_log(server)

    expected = {
        threads[conversation]: [
            message
            for turn in range(TURNS)
            for message in (
                ("user_message", load_text(conversation, turn)),
                ("assistant_message", words(REPLY_TOKENS)),
            )
        ]
        for conversation in range(CONVERSATIONS)
    }
    saved = saved_threads(sqlite_file(server))
    assert len(saved) == CONVERSATIONS
    assert saved == expected
    kinds = [kind for messages in saved.values() for kind, _ in messages]
    assert kinds.count("user_message") == kinds.count("assistant_message") == CONVERSATIONS * TURNS


# -- a crash -----------------------------------------------------------------------------


async def test_sigkill_mid_reply_leaves_a_sound_database(mock: OpenAIMock, tmp_path: Path) -> None:
    # The killed reply's lease on the thread (store.leases) expires 2 s after its last
    # renewal, inside the 5 s the follow-up may wait for it: then it is taken over.
    env = app_env(mock.base_url, tmp_path / "crash.db", CHATKIT_LEASE_SECONDS="2")
    text = unique("[tokens 200] [delay 0.05]")
    events: list[dict[str, Any]] = []
    decoder = SSEDecoder()
    with ServerProcess(env, workdir=tmp_path, name="killed") as server:
        with anyio.fail_after(TEST_SECONDS):
            async with http_client() as client:
                request_body = encode(create_thread(text))
                async with client.stream(
                    "POST", f"{server.url}/chatkit", content=request_body
                ) as response:
                    with pytest.raises(httpx.TransportError):
                        async for chunk in response.aiter_bytes():
                            events += decoder.feed(chunk)
                            if sum(map(is_text_delta, events)) >= 3 and server.returncode is None:
                                server.send_signal(signal.SIGKILL)
        assert server.wait(KILL_SECONDS) == -signal.SIGKILL
    assert 3 <= sum(map(is_text_delta, events)) < 200

    with closing(sqlite3.connect(sqlite_file(server))) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    thread_id = thread_id_of(events)
    follow_up = unique("[tokens 3]")
    with ServerProcess(env, workdir=tmp_path, name="restarted") as restarted:
        with anyio.fail_after(TEST_SECONDS):
            async with http_client() as client:
                thread = await call(client, restarted.url, get_thread(thread_id), {})
                assert message_texts(thread["items"]["data"]) == [("user_message", text)]
                turn = await stream_turn(
                    client, restarted.url, add_message(thread_id, follow_up), {}
                )
                assert_completed(turn, 3)
                messages = await saved_messages(client, restarted.url, thread_id, {}, 3)
    assert messages == unanswered_then_answered(text, follow_up)
    assert_clean_log(restarted)


# -- upstream faults ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_server(
    mock: OpenAIMock, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server that never retries the model and gives it one second."""
    workdir = tmp_path_factory.mktemp("faults")
    env = app_env(
        mock.base_url,
        workdir / "faults.db",
        CHATKIT_MODEL_MAX_RETRIES="0",
        CHATKIT_MODEL_TIMEOUT="1",
    )
    with ServerProcess(env, workdir=workdir, name="faults") as running:
        yield running


async def fault_then_recovery(
    failing: ServerProcess, text: str, message: str, recovering: ServerProcess | None = None
) -> None:
    """The first message ends in a retryable error saying `message`, within FAULT_SECONDS;
    the user's message is kept, and the next message in the thread (sent to `recovering`,
    by default the same server) completes."""
    recovering = recovering or failing
    follow_up = unique("[tokens 3]")
    with anyio.fail_after(TEST_SECONDS):
        async with http_client() as client:
            turn = await stream_turn(client, failing.url, create_thread(text), {})
            assert turn.end - turn.start < FAULT_SECONDS, turn.end - turn.start
            error = turn.events[-1]
            assert error["type"] == "error", turn.events
            assert error["allow_retry"] is True
            assert message in error["message"], error
            thread_id = thread_id_of(turn.events)
            saved = await saved_messages(client, failing.url, thread_id, {}, 1)
            assert saved == [("user_message", text)]

            again = await stream_turn(client, recovering.url, add_message(thread_id, follow_up), {})
            assert_completed(again, 3)
            saved = await saved_messages(client, recovering.url, thread_id, {}, 3)
    assert saved == unanswered_then_answered(text, follow_up)


FAULTS = {
    "429": ("[error 429]", "rate limited"),
    "500": ("[error 500]", "failed to answer"),
    "stall-mid-stream": ("[stall 5]", "took too long"),
    "stall-before-headers": ("[stall-before 5]", "took too long"),
}


@pytest.mark.parametrize("case", FAULTS)
async def test_an_upstream_fault_ends_in_a_retryable_error(
    fault_server: ServerProcess, case: str
) -> None:
    directive, message = FAULTS[case]
    await fault_then_recovery(fault_server, unique(directive), message)
    assert_clean_log(fault_server)


@pytest.mark.parametrize("case", ["cut", "failed-event"])
async def test_a_model_failure_mid_reply_keeps_the_text_and_logs_a_warning(
    fault_server: ServerProcess, case: str
) -> None:
    """The connection to the model drops, or the model's stream reports a failure, after
    some text: the text stays in the thread, and the log has a warning, not a traceback
    (every way and both model APIs, in-process: `test_partial`)."""
    directive, message = MID_REPLY_FAULTS[case]
    greeting, text = unique("[tokens 1]"), unique(directive)
    with anyio.fail_after(TEST_SECONDS):
        async with http_client() as client:
            first = await stream_turn(client, fault_server.url, create_thread(greeting), {})
            thread_id = thread_id_of(first.events)
            turn = await stream_turn(client, fault_server.url, add_message(thread_id, text), {})
            error = turn.events[-1]
            assert error["type"] == "error" and error["allow_retry"] is True, turn.events
            assert message in error["message"], error
            partial = assistant_text(turn.events)
            saved = await saved_messages(client, fault_server.url, thread_id, {}, 4)
    assert partial.strip() and words(3).startswith(partial), partial
    assert saved == [
        ("user_message", greeting),
        ("assistant_message", words(1)),
        ("user_message", text),
        ("assistant_message", partial),
    ]
    log = fault_server.log_path.read_text(errors="replace")
    assert f"WARNING tripchat.bridge model request failed for thread {thread_id}" in log, log
    assert_clean_log(fault_server)


async def test_a_429_is_retried_then_ends_in_a_retryable_error(
    mock: OpenAIMock, tmp_path: Path
) -> None:
    env = app_env(mock.base_url, tmp_path / "retries.db")
    text = unique("[error 429]")
    with ServerProcess(env, workdir=tmp_path, name="retries") as server:
        await fault_then_recovery(server, text, "rate limited")
    asked = [r.status for r in list(mock.requests) if text in json.dumps(r.body)]
    # Two retries by default, then the follow-up (whose history carries the text) succeeds.
    assert asked == [429, 429, 429, 200]


async def test_a_refused_model_connection_ends_in_a_retryable_error(
    fault_server: ServerProcess, tmp_path: Path
) -> None:
    closed = f"http://{HOST}:{free_port()}/v1"
    env = app_env(closed, sqlite_file(fault_server), CHATKIT_MODEL_MAX_RETRIES="0")
    with ServerProcess(env, workdir=tmp_path, name="refused") as refused:
        # The same SQLite file: the next message goes to a server whose model is up.
        await fault_then_recovery(refused, unique("hello"), "could not reach", fault_server)
    assert_clean_log(refused)


# -- isolation -------------------------------------------------------------------------


def foreign_requests(thread_id: str, user_item: str, reply: str) -> dict[str, bytes]:
    """Every request that names someone else's thread or items."""
    return {
        "threads.get_by_id": request("threads.get_by_id", thread_id=thread_id),
        "threads.update": request("threads.update", thread_id=thread_id, title="mine now"),
        "threads.delete": request("threads.delete", thread_id=thread_id),
        "threads.add_user_message": request(
            "threads.add_user_message", thread_id=thread_id, input=user_input("hi [tokens 1]")
        ),
        "threads.retry_after_item": request(
            "threads.retry_after_item", thread_id=thread_id, item_id=user_item
        ),
        "threads.add_client_tool_output": request(
            "threads.add_client_tool_output", thread_id=thread_id, result={"city": "Porto"}
        ),
        "items.list": request("items.list", thread_id=thread_id),
        "items.feedback": request(
            "items.feedback", thread_id=thread_id, item_ids=[reply], kind="negative"
        ),
        "threads.list after it": request("threads.list", after=thread_id),
    }


async def snapshot(client: Client, thread_id: str, user: str) -> tuple[Any, Any]:
    """What the owner sees of a thread: the thread with its items, and every item."""
    thread = await client.json(request("threads.get_by_id", thread_id=thread_id), user)
    items = await client.json(request("items.list", thread_id=thread_id, limit=100), user)
    return thread, items


async def test_another_user_gets_404_for_everything_and_changes_nothing(
    openai_mock: OpenAIMock, tmp_path: Path
) -> None:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path}/isolation.db",
        openai_base_url=openai_mock.base_url,
        openai_api_key="test",
        model_max_retries=0,
        tracing=False,
    )
    alice = RequestContext("alice")
    with anyio.fail_after(TEST_SECONDS):
        async with app_client(settings) as client:
            thread_id = await client.create("Lisbon in May [tokens 2]", user="alice")
            bob_thread = await client.create("Rome [tokens 1]", user="bob")
            listed = await client.json(request("items.list", thread_id=thread_id), "alice")
            user_item, reply = (item["id"] for item in listed["data"])
            # A pending client tool call, so that alice could send its output.
            pending = ClientToolCallItem(
                id="cto_pending",
                thread_id=thread_id,
                created_at=datetime.now(),
                call_id="call_1",
                name="get_location",
                arguments={},
            )
            await client.store.add_thread_item(thread_id, pending, alice)
            before = await snapshot(client, thread_id, "alice")
            asked = len(openai_mock.requests)

            for name, body in foreign_requests(thread_id, user_item, reply).items():
                response = await client.post(body, user="bob")
                assert response.status_code == 404, (name, response.text)
                error_message(response, 404)
            mine = await client.json(request("threads.list"), "bob")
            assert [thread["id"] for thread in mine["data"]] == [bob_thread]
            own_items = request("items.list", thread_id=bob_thread, after=user_item)
            error_message(await client.post(own_items, user="bob"), 404)

            assert await snapshot(client, thread_id, "alice") == before
            assert before[0]["title"] == "Lisbon in May [tokens 2]"
            assert await client.store.load_feedback(thread_id, alice) == {}
            assert len(openai_mock.requests) == asked, "bob's requests reached the model"
