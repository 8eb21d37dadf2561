"""Many readers leaving at once: every model call is closed and every partial reply kept.

A real `tripchat serve` process on each backend, real HTTP/1.1 clients and the OpenAI mock,
which records whether the server hung up on each model call. How fast this happens for a
thousand streams is measured by `bench/chat_bench.py --hold`; here the end state is checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from chatkit_client import SSEDecoder, add_message, create_thread, encode, is_text_delta
from conftest import empty_postgres
from openai_mock import OpenAIMock
from servers import ServerProcess, app_env
from test_http import http_client, poll, record_of, saved_messages, stream_turn, unique, words

from tripchat.partial import CANCELLED_NOTE

pytestmark = pytest.mark.anyio

READERS = 50
HELD = "[tokens 2] [delay 120]"
"""One delta, then the model pauses far longer than the test: only a hang-up ends it."""
CLOSE_SECONDS = 30.0
"""A generous bound for the end state, not a speed target."""
TEST_SECONDS = 120.0


@pytest.fixture
def server(openai_mock: OpenAIMock, db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """`tripchat serve` on this test's database, the mock as its model."""
    if not db_url.startswith("sqlite:"):
        anyio.run(empty_postgres, db_url)
    env = app_env(openai_mock.base_url, tmp_path / "unused.db", CHATKIT_DB_URL=db_url)
    with ServerProcess(env, workdir=tmp_path, name="abandon") as running:
        yield running


class Readers:
    """Readers that each stop at their reply's first delta until all have got there."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.waiting = 0
        self.all_in = anyio.Event()

    async def read(self, client: httpx.AsyncClient, url: str, user: str, text: str) -> str:
        """Start a conversation and read up to its first text delta; once every reader is
        there, return (the caller's closing of the response hangs up). The thread id."""
        decoder = SSEDecoder()
        thread_id = ""
        body = encode(create_thread(text))
        headers = {"X-User-Id": user}
        async with client.stream("POST", f"{url}/chatkit", content=body, headers=headers) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_bytes():
                for event in decoder.feed(chunk):
                    if event["type"] == "thread.created":
                        thread_id = event["thread"]["id"]
                    if is_text_delta(event):
                        self.waiting += 1
                        if self.waiting == self.count:
                            self.all_in.set()
                        await self.all_in.wait()
                        return thread_id
        raise AssertionError(f"the stream of {text!r} ended before its first delta")


async def test_readers_leaving_at_once_close_every_model_call_and_keep_every_partial(
    server: ServerProcess, openai_mock: OpenAIMock
) -> None:
    texts = [unique(HELD) for _ in range(READERS)]
    threads: dict[int, str] = {}
    readers = Readers(READERS)
    with anyio.fail_after(TEST_SECONDS):
        # A connection per reader, as so many tabs; all hang up in the same instant.
        async with (
            httpx.AsyncClient(
                trust_env=False,
                timeout=httpx.Timeout(TEST_SECONDS),  # a loaded machine is slow to start 50
                limits=httpx.Limits(max_connections=READERS),
            ) as client,
            anyio.create_task_group() as group,
        ):

            async def reader(i: int) -> None:
                threads[i] = await readers.read(client, server.url, f"user-{i}", texts[i])

            for i in range(READERS):
                group.start_soon(reader, i)

        async def all_closed() -> bool | None:
            records = [record_of(openai_mock, text) for text in texts]
            return True if all(record.done for record in records) else None

        await poll(all_closed, CLOSE_SECONDS, "every model call to be closed")
        for text in texts:
            record = record_of(openai_mock, text)
            assert record.disconnected and record.deltas_sent == 1, record

        async with http_client() as client:
            for i, text in enumerate(texts):
                headers = {"X-User-Id": f"user-{i}"}
                messages = await saved_messages(client, server.url, threads[i], headers, 2)
                assert messages == [("user_message", text), ("assistant_message", words(1))]

            # The next turn is told the last one was stopped (ChatKit's hidden note), once.
            follow_up = unique("[tokens 3]")
            headers = {"X-User-Id": "user-0"}
            turn = await stream_turn(
                client, server.url, add_message(threads[0], follow_up), headers
            )
            assert any(is_text_delta(event) for event in turn.events)
            sent = json.dumps(record_of(openai_mock, follow_up).body)
            assert sent.count(CANCELLED_NOTE) == 1, sent[:2000]
