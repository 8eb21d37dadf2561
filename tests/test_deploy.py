"""Deploying as a Heroku-style platform does: the buildpack's install and a graceful restart.

The buildpack test installs `requirements.txt` into a fresh venv and runs the Procfile's
`web:` command from it against an empty database path. The restart tests run the same
command (from the dev venv) and send SIGTERM to its whole process group, as a platform
does on a deploy: replies in flight within `CHATKIT_SHUTDOWN_GRACE` finish, longer ones
end with a retryable `error` event and keep their partial text, new requests are
refused, and the process exits 0 leaving a checkpointed, intact SQLite file.

The tests use a 3 s grace. The default, 20 s, fits a platform that waits 30 s between
SIGTERM and SIGKILL: the measured exit comes within EXIT_MARGIN of the grace (checked
below), and Hypercorn's own wait (grace + 5 s) is a backstop that still ends at 25 s.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from chatkit_client import (
    SSEDecoder,
    add_message,
    assistant_text,
    create_thread,
    encode,
    is_text_delta,
    message_texts,
    thread_id_of,
)
from conftest import POSTGRES_URL_VAR, empty_postgres, needs_postgres
from openai_mock import OpenAIMock
from servers import ServerProcess, app_env, procfile_argv

from tripchat.config import Settings

REPO = Path(__file__).parents[1]
GRACE = 3.0
"""CHATKIT_SHUTDOWN_GRACE for the restart tests."""
EXIT_MARGIN = 8.0
"""SIGTERM to exit may take at most the grace plus this (cancelling, saving, closing): a
bound a loaded 2-core machine meets (up to 6.7 s past the grace seen), still well inside
the platform's SIGKILL at the default grace."""
PLATFORM_GRACE = 30.0
"""What Heroku-style platforms wait after SIGTERM before they SIGKILL."""
SHORT = "[tokens 30] [delay 0.05]"  # about 1.5 s: finishes within the grace
LONG = "[tokens 400] [delay 0.05]"  # about 20 s: outlives the grace
IN_FLIGHT_DELTAS = 2
SCENARIO_SECONDS = 30.0
TURN_SECONDS = 20.0
PROBE_SECONDS = 2.0
VENV_SECONDS = 60.0
INSTALL_SECONDS = 240.0


def words(count: int) -> str:
    """The text the mock streams for `[tokens count]`."""
    return "".join(f"w{i} " for i in range(count))


def unique(directives: str) -> str:
    """A user message of its own, so each thread is told apart."""
    return f"trip {uuid.uuid4().hex[:12]} {directives}"


def http_client() -> httpx.AsyncClient:
    """A client that ignores proxy variables; one per conversation, so one connection each."""
    return httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(TURN_SECONDS))


async def turn(url: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """One streamed request, read to its end: its events."""
    async with http_client() as client:
        response = await client.post(f"{url}/chatkit", content=encode(request))
    assert response.status_code == 200, response.text
    return SSEDecoder().feed(response.content)


def assert_complete(events: list[dict[str, Any]], text: str) -> None:
    """The reply streamed `text` in full, ended with its item.done and had no error."""
    assert [e for e in events if e.get("type") == "error"] == []
    assert assistant_text(events) == text
    done = [
        e["item"]
        for e in events
        if e.get("type") == "thread.item.done" and e["item"]["type"] == "assistant_message"
    ]
    assert message_texts(done) == [("assistant_message", text)], events[-3:]


def stored_messages(db: Path, thread_id: str) -> list[tuple[str, str]]:
    """(type, text) of the thread's messages as the SQLite file holds them."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT item_data FROM chatkit_items WHERE thread_id = ? ORDER BY id", (thread_id,)
        ).fetchall()
    return message_texts(json.loads(row[0]) for row in rows)


def pragma(db: Path, name: str) -> Any:
    """One PRAGMA's single value on a fresh connection."""
    with sqlite3.connect(db) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


# -- the buildpack path -----------------------------------------------------------------------


def run(argv: list[str], timeout: float, **options: Any) -> None:
    """Run a setup command; fail with its output if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **options)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stderr[-4000:]}"


def serve_and_chat(env: dict[str, str], workdir: Path, request: dict[str, Any]) -> str:
    """Start the Procfile's command, check /healthz and one turn, stop it; the thread id."""

    async def chat(url: str) -> str:
        async with http_client() as client:
            health = await client.get(f"{url}/healthz")
        assert (health.status_code, health.json()["status"]) == (200, "ok"), health.text
        events = await turn(url, request)
        assert_complete(events, words(10))
        return thread_id_of(events)

    srv = ServerProcess(env, procfile_argv(), workdir=workdir, name="buildpack")
    with srv:
        cmdline = Path(f"/proc/{srv.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        thread_id = anyio.run(chat, srv.url)
    assert srv.returncode == 0, srv.log()
    assert env["PATH"].split(os.pathsep)[0] in cmdline, f"not the fresh venv's tripchat: {cmdline}"
    return thread_id


@pytest.fixture(scope="module")
def buildpack_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with `requirements.txt` installed, as a Python buildpack makes it."""
    venv = tmp_path_factory.mktemp("buildpack") / "venv"
    run([sys.executable, "-m", "venv", str(venv)], VENV_SECONDS)
    python = str(venv / "bin" / "python")
    run(
        [python, "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
        INSTALL_SECONDS,
        cwd=REPO,
    )
    return venv / "bin"


def platform_env(bin_dir: Path, openai_mock: OpenAIMock, db_url: str) -> dict[str, str]:
    """Only what the platform and the README give the process: no schema step before start."""
    return {
        "PATH": os.pathsep.join([str(bin_dir), os.defpath]),
        "OPENAI_BASE_URL": openai_mock.base_url,
        "OPENAI_API_KEY": "test",
        "CHATKIT_DB_URL": db_url,
    }


@pytest.mark.slow
def test_requirements_install_and_procfile_web_serve_from_an_empty_database(
    buildpack_bin: Path, openai_mock: OpenAIMock, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    assert not db.exists()
    env = platform_env(buildpack_bin, openai_mock, f"sqlite:///{db}")
    thread_id = serve_and_chat(env, tmp_path, create_thread(unique("[tokens 10]")))
    # A second start on the same file applies the schema again, harmlessly.
    again = serve_and_chat(env, tmp_path, add_message(thread_id, unique("[tokens 10]")))
    assert again == thread_id
    assert [kind for kind, _ in stored_messages(db, thread_id)] == [
        "user_message",
        "assistant_message",
    ] * 2
    assert pragma(db, "user_version") == 1
    assert pragma(db, "integrity_check") == "ok"


@pytest.mark.slow
@needs_postgres
def test_the_buildpack_install_serves_on_the_platforms_database_url(
    buildpack_bin: Path, openai_mock: OpenAIMock, tmp_path: Path
) -> None:
    """Platforms hand out `postgres://...` in DATABASE_URL: set as is, it must just work."""
    url = os.environ[POSTGRES_URL_VAR].replace("postgresql://", "postgres://", 1)
    anyio.run(empty_postgres, url)
    env = platform_env(buildpack_bin, openai_mock, url)
    thread_id = serve_and_chat(env, tmp_path, create_thread(unique("[tokens 10]")))
    again = serve_and_chat(env, tmp_path, add_message(thread_id, unique("[tokens 10]")))
    assert again == thread_id


# -- a graceful restart -----------------------------------------------------------------------


@dataclass
class Stream:
    """One conversation's stream as the client saw it, filled in while it runs."""

    text: str
    events: list[dict[str, Any]] = field(default_factory=list)
    failure: BaseException | None = None
    ended_at: float | None = None

    @property
    def deltas(self) -> int:
        return sum(map(is_text_delta, self.events))

    async def run(self, url: str) -> None:
        """threads.create with this text, reading events as they arrive."""
        decoder = SSEDecoder()
        try:
            async with (
                http_client() as client,
                client.stream(
                    "POST", f"{url}/chatkit", content=encode(create_thread(self.text))
                ) as response,
            ):
                assert response.status_code == 200, await response.aread()
                async for chunk in response.aiter_bytes():
                    self.events += decoder.feed(chunk)
        except httpx.TransportError as exc:
            self.failure = exc
        self.ended_at = time.monotonic()


@dataclass
class Probe:
    """What a request sent while draining got: a status and JSON body, or refused."""

    status: int | None
    body: Any = None
    refused: str | None = None


async def probe(
    method: str, url: str, body: bytes | None = None, client: httpx.AsyncClient | None = None
) -> Probe:
    """One request, on `client`'s open connection or a new one; a transport error (refused,
    reset, closed) is a refusal."""
    try:
        async with AsyncExitStack() as stack:
            via = client if client is not None else await stack.enter_async_context(http_client())
            response = await via.request(method, url, content=body)
    except httpx.TransportError as exc:
        return Probe(None, refused=repr(exc))
    try:
        parsed = response.json()
    except ValueError:
        parsed = response.text[:500]
    return Probe(response.status_code, parsed)


async def health_once_draining(url: str) -> Probe:
    """/healthz from SIGTERM on: 200 until the signal is handled, then what draining says."""
    deadline = time.monotonic() + PROBE_SECONDS
    while (answer := await probe("GET", f"{url}/healthz")).status == 200:
        if time.monotonic() > deadline:
            break
        await anyio.sleep(0.02)
    return answer


@dataclass
class Drained:
    """Everything observed around one SIGTERM, for the tests to assert on."""

    db: Path
    short: Stream
    long: Stream
    health: Probe
    new_request: Probe
    kept_request: Probe
    exit_code: int | None
    exit_seconds: float
    group_left: bool
    error_seconds: float | None
    wal_bytes: int | None
    integrity: str
    short_stored: list[tuple[str, str]]
    long_stored: list[tuple[str, str]]
    log: str


def group_alive(pgid: int) -> bool:
    """True while any process of the group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def sigterm_mid_reply(
    srv: ServerProcess,
) -> tuple[Stream, Stream, Probe, Probe, Probe, float]:
    """Start a short and a long reply, SIGTERM the group mid-reply, probe while draining:
    on a new connection, and on one kept alive from before (as a browser's would be)."""
    short, long = Stream(unique(SHORT)), Stream(unique(LONG))
    new_thread = encode(create_thread(unique("[tokens 5]")))
    with anyio.fail_after(SCENARIO_SECONDS):
        async with http_client() as kept, anyio.create_task_group() as group:
            assert (await kept.get(f"{srv.url}/healthz")).status_code == 200
            group.start_soon(short.run, srv.url)
            group.start_soon(long.run, srv.url)
            await wait_for(
                lambda: min(short.deltas, long.deltas) >= IN_FLIGHT_DELTAS,
                TURN_SECONDS,
                "both replies to be streaming",
            )
            assert short.ended_at is None, "the short reply ended before SIGTERM"
            sigterm_at = time.monotonic()
            srv.send_signal(signal.SIGTERM, group=True)
            health = await health_once_draining(srv.url)
            new_request = await probe("POST", f"{srv.url}/chatkit", new_thread)
            kept_request = await probe("POST", f"{srv.url}/chatkit", new_thread, kept)
    return short, long, health, new_request, kept_request, sigterm_at


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drained]:
    """The Procfile's command with a 3 s grace, SIGTERMed with two replies in flight."""
    workdir = tmp_path_factory.mktemp("drain")
    db = workdir / "chat.db"
    with OpenAIMock() as mock:
        env = app_env(mock.base_url, db, CHATKIT_SHUTDOWN_GRACE=str(GRACE))
        with ServerProcess(env, procfile_argv(), workdir=workdir, name="drain") as srv:
            short, long, health, new_request, kept_request, sigterm_at = anyio.run(
                sigterm_mid_reply, srv
            )
            deadline = sigterm_at + PLATFORM_GRACE
            while srv.returncode is None and time.monotonic() < deadline:
                time.sleep(0.02)
            exit_seconds = time.monotonic() - sigterm_at
            group_left = group_alive(srv.pid)
            exit_code = srv.returncode
        wal = db.with_name(db.name + "-wal")
        # Looked at before anything opens the file again (a reader recreates the -wal).
        wal_bytes = wal.stat().st_size if wal.exists() else None
        yield Drained(
            db=db,
            short=short,
            long=long,
            health=health,
            new_request=new_request,
            kept_request=kept_request,
            exit_code=exit_code,
            exit_seconds=exit_seconds,
            group_left=group_left,
            error_seconds=None if long.ended_at is None else long.ended_at - sigterm_at,
            wal_bytes=wal_bytes,
            integrity=pragma(db, "integrity_check"),
            short_stored=stored_messages(db, thread_id_of(short.events)),
            long_stored=stored_messages(db, thread_id_of(long.events)),
            log=srv.log(),
        )


def test_a_reply_within_the_grace_completes_and_is_stored(drained: Drained) -> None:
    short = drained.short
    assert short.failure is None, f"{short.failure!r}\n{drained.log}"
    assert_complete(short.events, words(30))
    assert drained.short_stored == [("user_message", short.text), ("assistant_message", words(30))]


def test_a_reply_past_the_grace_ends_with_a_retryable_error_and_keeps_its_text(
    drained: Drained,
) -> None:
    long = drained.long
    assert long.failure is None, f"the stream was cut: {long.failure!r}\n{drained.log}"
    last = long.events[-1]
    assert last["type"] == "error" and last["allow_retry"] is True, long.events[-3:]
    assert "restarting" in last["message"]
    # It had its grace: cut at about GRACE after SIGTERM, not at once.
    assert drained.error_seconds is not None and drained.error_seconds >= GRACE - 0.5
    seen = assistant_text(long.events)
    assert seen and words(400).startswith(seen)
    assert [kind for kind, _ in drained.long_stored] == ["user_message", "assistant_message"]
    assert drained.long_stored[0][1] == long.text
    saved = drained.long_stored[1][1]
    assert saved.startswith(seen) and words(400).startswith(saved) and saved != words(400)


def test_draining_refuses_new_requests_and_says_so_on_healthz(drained: Drained) -> None:
    health = drained.health
    assert health.refused or (health.status == 503 and health.body["status"] == "draining"), health
    for refused in (drained.new_request, drained.kept_request):
        assert refused.refused or (
            refused.status == 503 and refused.body["error"]["status"] == 503
        ), refused


def test_the_process_exits_0_soon_after_the_grace(drained: Drained) -> None:
    assert drained.exit_code == 0, drained.log
    assert drained.exit_seconds <= GRACE + EXIT_MARGIN, drained.exit_seconds
    assert not drained.group_left, "a process of the group outlived SIGTERM"
    # The default grace leaves the platform's SIGKILL unneeded, with room to spare.
    assert Settings.from_env({}).shutdown_grace + EXIT_MARGIN < PLATFORM_GRACE


def test_the_database_is_checkpointed_and_intact(drained: Drained) -> None:
    assert drained.wal_bytes in (None, 0), f"-wal left with {drained.wal_bytes} bytes"
    assert drained.integrity == "ok"


@pytest.mark.anyio
async def test_a_restart_on_the_same_file_takes_the_next_message(
    drained: Drained, openai_mock: OpenAIMock, tmp_path: Path
) -> None:
    thread_id = thread_id_of(drained.long.events)
    text = unique("[tokens 10]")
    env = app_env(openai_mock.base_url, drained.db)
    with ServerProcess(env, procfile_argv(), workdir=tmp_path, name="restart") as srv:
        with anyio.fail_after(TURN_SECONDS):
            events = await turn(srv.url, add_message(thread_id, text))
    assert_complete(events, words(10))
    assert srv.returncode == 0, srv.log()
    assert stored_messages(drained.db, thread_id) == [
        *drained.long_stored,
        ("user_message", text),
        ("assistant_message", words(10)),
    ]
