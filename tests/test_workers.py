"""Several serving processes on one database: the reply rules hold across them.

Two `tripchat serve` processes on one SQLite file or one PostgreSQL database: two tabs on
one thread served by different processes never interleave replies (the second waits, or
gets 409), the per-user limit counts replies on every process, a SIGKILLed process's
lease is taken over once it expires, a delete on one process stops the thread's reply on
the other and no rename or end-of-turn save brings a deleted thread back. And
`tripchat serve --workers 2` serves on one port, spreads a burst of connections over
its workers and drains on SIGTERM to its group.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import asyncpg
import httpx
import pytest
from chatkit.types import ErrorEvent, ThreadStreamEvent
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
from conftest import POSTGRES_URL_VAR, empty_postgres, needs_postgres
from openai_mock import OpenAIMock
from pydantic import TypeAdapter
from servers import HOST, ServerProcess, app_env
from test_postgres_servers import running

pytestmark = pytest.mark.anyio

LEASE_SECONDS = 2.0
PER_USER = 2
GRACE = 3.0
TEST_SECONDS = 60.0
EXIT_SECONDS = 30.0
LONG = "[tokens 300] [delay 0.05]"  # about 15 s: outlives the thread wait and the grace
SHORT = "[tokens 20] [delay 0.05]"  # about 1 s
USER_HEADER = "X-User-Id"
_EVENT: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)


def words(count: int) -> str:
    """The text the mock streams for `[tokens count]`."""
    return "".join(f"w{i} " for i in range(count))


def unique(directives: str) -> str:
    return f"trip {uuid.uuid4().hex[:12]} {directives}"


def user() -> str:
    return f"traveller-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def mock() -> Iterator[OpenAIMock]:
    with OpenAIMock() as served:
        yield served


@pytest.fixture(scope="module")
def db_env(
    backend: str, mock: OpenAIMock, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The servers' variables: the backend's database, short leases, two replies per user."""
    db = tmp_path_factory.mktemp("workers") / "chat.db"
    extra = {
        "CHATKIT_LEASE_SECONDS": str(LEASE_SECONDS),
        "CHATKIT_MAX_STREAMS_PER_USER": str(PER_USER),
        "CHATKIT_SHUTDOWN_GRACE": str(GRACE),
        "CHATKIT_MODEL_MAX_RETRIES": "0",
    }
    if backend == "postgres":
        anyio.run(empty_postgres, os.environ[POSTGRES_URL_VAR])
        extra["CHATKIT_DB_URL"] = os.environ[POSTGRES_URL_VAR]
    return app_env(mock.base_url, db, **extra)


@pytest.fixture(scope="module")
def pair(db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two single-process servers on the one database, started together."""
    workdir = tmp_path_factory.mktemp("pair")
    servers = [ServerProcess(db_env, workdir=workdir, name=f"server{n}") for n in (1, 2)]
    with running(servers):
        yield servers
    for server in servers:
        assert "Traceback" not in server.log(10**8), server.log()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        trust_env=False, timeout=httpx.Timeout(TEST_SECONDS), limits=limits
    ) as opened:
        yield opened


async def post(
    client: httpx.AsyncClient, server: ServerProcess, request: dict[str, Any], who: str
) -> httpx.Response:
    headers = {USER_HEADER: who}
    return await client.post(f"{server.url}/chatkit", content=encode(request), headers=headers)


class Tab:
    """One streamed request read as it arrives: `started` once text streams."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.events: list[dict[str, Any]] = []
        self.failure: Exception | None = None
        self.started = anyio.Event()

    async def run(
        self, client: httpx.AsyncClient, server: ServerProcess, request: dict[str, Any], who: str
    ) -> None:
        decoder = SSEDecoder()
        headers = {USER_HEADER: who}
        url = f"{server.url}/chatkit"
        try:
            async with client.stream("POST", url, content=encode(request), headers=headers) as resp:
                self.status = resp.status_code
                async for chunk in resp.aiter_bytes():
                    self.body += chunk
                    if resp.status_code != 200:
                        continue
                    for event in decoder.feed(chunk):
                        _EVENT.validate_python(event)
                        self.events.append(event)
                        if is_text_delta(event):
                            self.started.set()
        except httpx.TransportError as exc:  # the server died mid-reply
            self.failure = exc
        self.started.set()

    @property
    def errors(self) -> list[ErrorEvent]:
        return [ErrorEvent.model_validate(e) for e in self.events if e["type"] == "error"]

    @property
    def deltas(self) -> int:
        return sum(map(is_text_delta, self.events))

    def assert_stopped_for_a_restart(self, tokens: int) -> None:
        """Cut short by a shutdown: a retryable error, the text streamed so far kept."""
        assert self.status == 200 and self.failure is None, self.failure
        assert [(e.message, e.allow_retry) for e in self.errors] == [
            ("The server is restarting. Please retry.", True)
        ], self.events[-3:]
        assert 0 < len(assistant_text(self.events).split()) < tokens


async def turn(
    client: httpx.AsyncClient, server: ServerProcess, request: dict[str, Any], who: str
) -> list[dict[str, Any]]:
    tab = Tab()
    await tab.run(client, server, request, who)
    assert tab.status == 200, tab.body[:500]
    assert tab.errors == [], tab.events[-3:]
    return tab.events


async def messages(
    client: httpx.AsyncClient, server: ServerProcess, thread_id: str, who: str
) -> list[tuple[str, str]]:
    response = await post(client, server, get_thread(thread_id), who)
    assert response.status_code == 200, response.text
    return message_texts(response.json()["items"]["data"])


async def lease_count(env: dict[str, str]) -> int:
    """Rows in chatkit_leases: none once every reply has ended."""
    url = env["CHATKIT_DB_URL"]
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM chatkit_leases").fetchone()[0])
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT COUNT(*) FROM chatkit_leases"))
    finally:
        await conn.close()


async def no_leases_left(env: dict[str, str]) -> None:
    """Every lease is freed (polled: a reply frees its lease just after its last event)."""
    with anyio.fail_after(10):
        while await lease_count(env):
            await anyio.sleep(0.05)


async def long_reply_running(
    group: anyio.abc.TaskGroup, client: httpx.AsyncClient, server: ServerProcess, who: str
) -> tuple[str, Tab]:
    """A new thread whose second reply (LONG) is streaming on `server`, in `group`."""
    thread_id = thread_id_of(await turn(client, server, create_thread(unique("[tokens 1]")), who))
    tab = Tab()
    group.start_soon(tab.run, client, server, add_message(thread_id, unique(LONG)), who)
    await tab.started.wait()
    return thread_id, tab


# -- two processes, one database ------------------------------------------------------------


async def test_two_tabs_on_one_thread_on_two_processes_take_turns(
    pair: list[ServerProcess], client: httpx.AsyncClient, db_env: dict[str, str]
) -> None:
    first, second = pair
    who = user()
    opening = unique("[tokens 2]")
    thread_id = thread_id_of(await turn(client, first, create_thread(opening), who))
    tab1, tab2 = Tab(), Tab()
    one, two = unique(SHORT), unique("[tokens 5]")
    with anyio.fail_after(TEST_SECONDS):
        async with anyio.create_task_group() as group:
            group.start_soon(tab1.run, client, first, add_message(thread_id, one), who)
            await tab1.started.wait()
            # The other tab's message reaches the other process while the reply streams.
            group.start_soon(tab2.run, client, second, add_message(thread_id, two), who)
    assert (tab1.status, tab2.status) == (200, 200), (tab1.body[:300], tab2.body[:300])
    assert assistant_text(tab1.events) == words(20)
    assert assistant_text(tab2.events) == words(5)
    # One reply after the other, never interleaved: the second waited for the first.
    assert await messages(client, second, thread_id, who) == [
        ("user_message", opening),
        ("assistant_message", words(2)),
        ("user_message", one),
        ("assistant_message", words(20)),
        ("user_message", two),
        ("assistant_message", words(5)),
    ]
    await no_leases_left(db_env)


async def test_a_thread_busy_on_another_process_past_the_wait_is_409(
    pair: list[ServerProcess], client: httpx.AsyncClient, db_env: dict[str, str]
) -> None:
    first, second = pair
    who = user()
    with anyio.fail_after(TEST_SECONDS):
        async with anyio.create_task_group() as group:
            thread_id, _ = await long_reply_running(group, client, first, who)
            refused = await post(client, second, add_message(thread_id, unique("[tokens 1]")), who)
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["status"] == 409
            group.cancel_scope.cancel()  # the user closes the tab: the reply stops
    await no_leases_left(db_env)
    kinds = [kind for kind, _ in await messages(client, second, thread_id, who)]
    assert "user_message" not in kinds[3:], kinds  # the refused message was never added


async def test_the_per_user_limit_counts_replies_on_every_process(
    pair: list[ServerProcess], client: httpx.AsyncClient, db_env: dict[str, str]
) -> None:
    first, second = pair
    who, other = user(), user()
    tabs = [Tab() for _ in range(PER_USER)]
    with anyio.fail_after(TEST_SECONDS):
        async with anyio.create_task_group() as group:
            for n, tab in enumerate(tabs):
                group.start_soon(tab.run, client, pair[n % 2], create_thread(unique(LONG)), who)
                await tab.started.wait()
            for server in pair:  # one reply on each process: the user's limit is reached
                refused = await post(client, server, create_thread(unique("[tokens 1]")), who)
                assert refused.status_code == 429, refused.text
                assert refused.headers["retry-after"]
            # Another user is not limited by it.
            await turn(client, second, create_thread(unique("[tokens 1]")), other)
            group.cancel_scope.cancel()
    await no_leases_left(db_env)
    await turn(client, first, create_thread(unique("[tokens 1]")), who)


async def test_a_delete_on_one_process_stops_the_reply_on_the_other(
    pair: list[ServerProcess], client: httpx.AsyncClient, db_env: dict[str, str]
) -> None:
    first, second = pair
    who = user()
    with anyio.fail_after(TEST_SECONDS):
        async with anyio.create_task_group() as group:
            thread_id, tab = await long_reply_running(group, client, first, who)
            deleted = await post(
                client, second, {"type": "threads.delete", "params": {"thread_id": thread_id}}, who
            )
            assert deleted.status_code == 200, deleted.text
    # The reply stopped well before its 300 words, told the reader why, and left nothing.
    assert tab.status == 200
    assert [e.message for e in tab.errors] == ["This conversation was deleted."]
    assert len(assistant_text(tab.events).split()) < 300
    for server in pair:
        gone = await post(client, server, get_thread(thread_id), who)
        assert gone.status_code == 404, gone.text
    await no_leases_left(db_env)


async def test_renames_racing_deletes_on_two_processes_never_bring_a_thread_back(
    pair: list[ServerProcess], client: httpx.AsyncClient
) -> None:
    first = pair[0]
    who = user()
    threads = [
        thread_id_of(await turn(client, pair[n % 2], create_thread(unique("[tokens 1]")), who))
        for n in range(6)
    ]
    statuses: dict[str, list[int]] = {thread_id: [] for thread_id in threads}

    async def rename(thread_id: str, server: ServerProcess) -> None:
        for n in range(5):
            request = {
                "type": "threads.update",
                "params": {"thread_id": thread_id, "title": f"renamed {n}"},
            }
            statuses[thread_id].append((await post(client, server, request, who)).status_code)

    async def delete(thread_id: str, server: ServerProcess) -> None:
        request = {"type": "threads.delete", "params": {"thread_id": thread_id}}
        assert (await post(client, server, request, who)).status_code == 200

    with anyio.fail_after(TEST_SECONDS):
        async with anyio.create_task_group() as group:
            for n, thread_id in enumerate(threads):
                group.start_soon(rename, thread_id, pair[n % 2])
                group.start_soon(delete, thread_id, pair[(n + 1) % 2])
    for thread_id in threads:
        assert set(statuses[thread_id]) <= {200, 404}, statuses
        for server in pair:
            gone = await post(client, server, get_thread(thread_id), who)
            assert gone.status_code == 404, gone.text
    listed = await post(client, first, {"type": "threads.list", "params": {}}, who)
    assert listed.json()["data"] == []


async def test_a_killed_process_lease_is_taken_over_after_it_expires(
    pair: list[ServerProcess],
    client: httpx.AsyncClient,
    db_env: dict[str, str],
    tmp_path: Path,
) -> None:
    _, second = pair
    who = user()
    with ServerProcess(db_env, workdir=tmp_path, name="doomed") as doomed:
        with anyio.fail_after(TEST_SECONDS):
            async with anyio.create_task_group() as group:
                thread_id, tab = await long_reply_running(group, client, doomed, who)
                doomed.send_signal(signal.SIGKILL)
        assert doomed.wait(EXIT_SECONDS) == -signal.SIGKILL
        assert tab.failure is not None  # the reply was cut with its process
    assert await lease_count(db_env) == 1  # the dead process's lease, until it expires
    # The thread's next message waits out the lease (2 s, under the 5 s wait) and runs.
    follow_up = unique("[tokens 3]")
    events = await turn(client, second, add_message(thread_id, follow_up), who)
    assert assistant_text(events) == words(3)
    assert (await messages(client, second, thread_id, who))[-2:] == [
        ("user_message", follow_up),
        ("assistant_message", words(3)),
    ]
    await no_leases_left(db_env)


# -- tripchat serve --workers ----------------------------------------------------------------

WORKER_PIDS = re.compile(r"serving with 2 worker processes: \[(\d+), (\d+)\]")


def own_database(env: dict[str, str], workdir: Path) -> dict[str, str]:
    """The variables with a SQLite file of its own (the pair keeps the shared one open)."""
    if env["CHATKIT_DB_URL"].startswith("sqlite:"):
        return {**env, "CHATKIT_DB_URL": f"sqlite:///{workdir / 'workers.db'}"}
    return env


def workers_server(env: dict[str, str], workdir: Path) -> ServerProcess:
    """`tripchat serve --workers 2` (the dev venv's), on a port of its own."""
    argv = [sys.executable, "-m", "tripchat.cli", "serve", "--host", HOST, "--port", "{port}"]
    return ServerProcess(env, [*argv, "--workers", "2"], workdir=workdir, name="workers")


def worker_pids(server: ServerProcess) -> list[int]:
    found = WORKER_PIDS.search(server.log(10**8))
    assert found, server.log()
    return [int(pid) for pid in found.groups()]


async def test_workers_serve_one_port_and_drain_on_sigterm_to_the_group(
    db_env: dict[str, str], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    env = {**own_database(db_env, tmp_path), "WEB_CONCURRENCY": "3"}  # --workers wins
    with workers_server(env, tmp_path) as server:
        pids = worker_pids(server)
        assert len(set(pids)) == 2
        await listening_workers(server, 2)  # a worker still starting has no handler yet
        short, long = [Tab() for _ in range(3)], [Tab() for _ in range(3)]
        with anyio.fail_after(TEST_SECONDS):
            async with anyio.create_task_group() as group:
                for tab in long:
                    group.start_soon(tab.run, client, server, create_thread(unique(LONG)), user())
                    await tab.started.wait()
                for tab in short:
                    group.start_soon(tab.run, client, server, create_thread(unique(SHORT)), user())
                    await tab.started.wait()
                server.send_signal(signal.SIGTERM)  # the whole group, as a platform does
        status = await anyio.to_thread.run_sync(server.wait, EXIT_SECONDS)
        log = server.log(10**8)
    assert status == 0, log
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    for tab in short:  # finished within the grace
        assert (tab.status, tab.errors, assistant_text(tab.events)) == (200, [], words(20))
    for tab in long:  # stopped at the grace
        tab.assert_stopped_for_a_restart(300)
    assert "Traceback" not in log, log
    url = env["CHATKIT_DB_URL"]
    if url.startswith("sqlite:///"):  # every worker closed its connection, checkpointed
        path = Path(url.removeprefix("sqlite:///"))
        assert not Path(f"{path}-wal").exists(), list(path.parent.iterdir())
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert await lease_count(env) == 0


async def test_signals_that_keep_coming_while_the_workers_exit_do_not_fail_the_exit(
    mock: OpenAIMock, tmp_path: Path
) -> None:
    """A platform signals the group and the parent forwards the signal too: a worker that
    has drained and is exiting gets another SIGTERM (under load it came 0.3 s later).
    The exit does not depend on the database: SQLite only."""
    env = app_env(mock.base_url, tmp_path / "exit.db", CHATKIT_SHUTDOWN_GRACE=str(GRACE))
    with workers_server(env, tmp_path) as server:
        await listening_workers(server, 2)  # a worker still starting has no handler yet
        deadline = time.monotonic() + EXIT_SECONDS
        while server.returncode is None and time.monotonic() < deadline:
            with suppress(ProcessLookupError):
                server.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                server.wait(0.005)
        log = server.log(10**8)
    assert server.returncode == 0, log
    assert "exited with status" not in log, log


CTRL_C_GRACE = 120.0
"""A grace the replies below would finish within: only the second Ctrl-C cuts them."""
SLOW = "[tokens 300] [delay 0.1]"  # about 30 s
DRAINING_DELTAS = 10
"""Deltas each reply streams after the first Ctrl-C (about 1 s), before the second."""


@pytest.mark.parametrize(
    "workers, group",
    [(2, True), (2, False), (1, True)],
    ids=["terminal", "parent-only", "one-process"],
)
async def test_a_second_ctrl_c_stops_the_replies_instead_of_waiting_out_the_grace(
    mock: OpenAIMock, client: httpx.AsyncClient, tmp_path: Path, workers: int, group: bool
) -> None:
    """Ctrl-C in a terminal signals the whole group; `kill -INT` only the parent, which
    passes it on. The first drains, as SIGTERM does; the second stops the replies now,
    each keeping its text and ending with a retryable error, and every process exits 0.
    SQLite only: the signals do not involve the database."""
    env = app_env(mock.base_url, tmp_path / "ctrlc.db", CHATKIT_SHUTDOWN_GRACE=str(CTRL_C_GRACE))
    if workers == 1:
        server = ServerProcess(env, workdir=tmp_path, name="ctrlc")
    else:
        server = workers_server(env, tmp_path)
    with server:
        pids = worker_pids(server) if workers > 1 else [server.pid]
        await listening_workers(server, workers)
        tabs = [Tab() for _ in range(4)]
        with anyio.fail_after(TEST_SECONDS):
            async with anyio.create_task_group() as tasks:
                for tab in tabs:
                    tasks.start_soon(tab.run, client, server, create_thread(unique(SLOW)), user())
                    await tab.started.wait()
                server.send_signal(signal.SIGINT, group=group)
                while server.log(10**8).count("shutting down: finishing replies") < workers:
                    await anyio.sleep(0.05)  # every process draining: the first signal is in
                # Still streaming well after it: the first Ctrl-C only drains.
                wanted = [tab.deltas + DRAINING_DELTAS for tab in tabs]
                while any(tab.deltas < n for tab, n in zip(tabs, wanted, strict=True)):
                    assert not any(tab.errors for tab in tabs), "stopped by the first Ctrl-C"
                    await anyio.sleep(0.05)
                server.send_signal(signal.SIGINT, group=group)
        status = await anyio.to_thread.run_sync(server.wait, EXIT_SECONDS)
        log = server.log(10**8)
    assert status == 0, log
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    for tab in tabs:
        tab.assert_stopped_for_a_restart(300)
    assert "Traceback" not in log, log
    assert await lease_count(env) == 0


async def test_a_worker_that_dies_stops_the_server_with_an_error(
    db_env: dict[str, str], tmp_path: Path
) -> None:
    with workers_server(own_database(db_env, tmp_path), tmp_path) as server:
        dead, survivor = worker_pids(server)
        os.kill(dead, signal.SIGKILL)
        status = await anyio.to_thread.run_sync(server.wait, EXIT_SECONDS)
        log = server.log(10**8)
    assert status == 1, log
    assert f"worker {dead} exited with status -9" in log, log
    assert not Path(f"/proc/{survivor}").exists()


async def listening_workers(server: ServerProcess, count: int) -> None:
    """Wait until `count` workers listen: /healthz answers once the first one does."""
    with anyio.fail_after(TEST_SECONDS):
        while server.log(10**8).count("Running on") < count:
            await anyio.sleep(0.05)


def connections_held(pid: int, port: int) -> int:
    """How many established connections to `port` the process `pid` holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            inodes.add(f"socket:[{fields[9]}]")
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            held += os.readlink(fd) in inodes
    return held


BURST = 128


async def test_a_burst_of_connections_is_spread_over_the_workers(
    db_env: dict[str, str], tmp_path: Path
) -> None:
    """Connections that arrive while both workers are busy are split between them: with
    one shared socket the first worker free accepted the whole burst, and keep-alive kept
    the other idle."""
    with workers_server(own_database(db_env, tmp_path), tmp_path) as server:
        pids = worker_pids(server)
        await listening_workers(server, 2)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # busy: nobody accepts while the burst arrives
        try:
            streams = [await anyio.connect_tcp(HOST, server.port) for _ in range(BURST)]
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        request = f"GET /healthz HTTP/1.1\r\nhost: {HOST}\r\n\r\n".encode()
        with anyio.fail_after(TEST_SECONDS):
            for stream in streams:
                await stream.send(request)
                assert (await stream.receive()).startswith(b"HTTP/1.1 200")
        held = [connections_held(pid, server.port) for pid in pids]
        for stream in streams:
            await stream.aclose()
    assert sum(held) == BURST, held
    # Fails by chance once in 60,000 runs; the shared socket split a burst 51 to 13 of 64.
    assert min(held) >= BURST * 5 // 16, held


async def test_a_second_workers_server_on_a_busy_port_is_refused(
    db_env: dict[str, str], tmp_path: Path
) -> None:
    """SO_REUSEPORT would let a second server join the first one's port and take half its
    connections (an old version serving beside a new one): it is refused in one line."""
    with workers_server(own_database(db_env, tmp_path), tmp_path) as server:
        await listening_workers(server, 2)
        second = workers_server(own_database(db_env, tmp_path), tmp_path)
        argv = [arg.replace(str(second.port), str(server.port)) for arg in second.argv]
        result = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                argv, env=second.env, capture_output=True, text=True, timeout=EXIT_SECONDS
            )
        )
        assert server.process is not None and server.process.poll() is None  # still serving
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        f"tripchat: cannot listen on {HOST}:{server.port}: Address already in use"
    ], result.stderr
