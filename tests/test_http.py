"""The HTTP surface end to end: a real server process, real HTTP/1.1 and HTTP/2, the OpenAI mock.

Covers incremental SSE delivery, HTTP/2 multiplexing (cleartext and TLS), a user leaving
mid-reply (a closed HTTP/1.1 connection, an HTTP/2 RST_STREAM), refusals that must not
take down the other streams of an HTTP/2 connection (hypercorn issue 329), and the
`hypercorn` and Procfile commands.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
import trustme
from anyio.abc import SocketStream
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
from openai_mock import OpenAIMock, RecordedRequest
from servers import (
    HOST,
    PORT_PLACEHOLDER,
    ServerProcess,
    app_env,
    free_port,
    minimal_env,
    procfile_argv,
    serve_argv,
)

T = TypeVar("T")

TOKEN = "s3cret-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_BODY = 2048
BIG_BODY = 256 * 1024
TEST_SECONDS = 20.0
SAVE_SECONDS = 3.0
EXIT_SECONDS = 30.0
"""A hang guard, not a speed check: a server's start-up alone took 10-13 s at load 3-4."""
IDLE_SECONDS = 6.0
"""Longer than Hypercorn's default keep-alive of 5 s."""

pytestmark = pytest.mark.anyio


def words(count: int) -> str:
    """The text the mock streams for `[tokens count]`."""
    return "".join(f"w{i} " for i in range(count))


def unique(directives: str) -> str:
    """A user message no other test sends, so its model request can be found in the mock."""
    return f"trip {uuid.uuid4().hex[:12]} {directives}"


def record_of(mock: OpenAIMock, text: str) -> RecordedRequest:
    """The first model request that carried this user message."""
    for record in list(mock.requests):
        if text in json.dumps(record.body):
            return record
    raise AssertionError(f"the model was never asked about {text!r}")


async def poll(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Call probe until it returns something, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if (found := await probe()) is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {what}")
        await anyio.sleep(0.05)


async def reply_cut_short(mock: OpenAIMock, text: str) -> RecordedRequest:
    """The model stream of this message, once the server has hung up on it."""

    async def ended() -> RecordedRequest | None:
        record = record_of(mock, text)
        return record if record.done else None

    record = await poll(ended, SAVE_SECONDS, f"the model stream of {text!r} to end")
    assert record.disconnected, f"the server read the whole reply: {record}"
    assert record.deltas_sent < 100, f"the model run was not cancelled: {record}"
    return record


def assert_partial_reply(messages: list[tuple[str, str]], user_text: str, seen: str) -> None:
    """The thread holds the user message and the part of the reply that was streamed."""
    assert [kind for kind, _ in messages] == ["user_message", "assistant_message"], messages
    assert messages[0][1] == user_text
    saved = messages[1][1]
    assert saved.startswith(seen) and words(200).startswith(saved), (seen, saved)
    assert 0 < len(saved) < len(words(200))


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock() -> Iterator[OpenAIMock]:
    """One mock for the module's servers; tests tell their requests apart by their text."""
    with OpenAIMock() as running:
        yield running


@pytest.fixture(scope="module")
def server(mock: OpenAIMock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`python -m tripchat.cli serve` with a bearer token and a 2 KiB body limit."""
    workdir = tmp_path_factory.mktemp("server")
    env = app_env(
        mock.base_url,
        workdir / "chat.db",
        CHATKIT_API_TOKEN=TOKEN,
        CHATKIT_MAX_BODY_BYTES=str(MAX_BODY),
    )
    with ServerProcess(env, workdir=workdir) as running:
        yield running


@dataclass
class TLSFiles:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""

    certfile: Path
    keyfile: Path
    client_context: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    """trustme's CA, its server certificate on disk, and a client context that trusts it."""
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return TLSFiles(certfile, keyfile, context)


# -- HTTP/1.1 and HTTP/2 with httpx ---------------------------------------------------------


def http_client(**options: Any) -> httpx.AsyncClient:
    """An httpx client that ignores proxy variables and never waits unbounded."""
    return httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(10.0), **options)


@dataclass
class Turn:
    """One streamed response: its events and when each arrived (time.monotonic())."""

    http_version: str
    start: float
    events: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    end: float = 0.0

    @property
    def first_delta(self) -> float:
        """When the first text delta arrived."""
        return next(t for t, e in zip(self.times, self.events, strict=True) if is_text_delta(e))


async def stream_turn(
    client: httpx.AsyncClient, url: str, request: dict[str, Any], headers: dict[str, str]
) -> Turn:
    """POST a streaming request and time each SSE event as it arrives."""
    decoder = SSEDecoder()
    start = time.monotonic()
    body = encode(request)
    async with client.stream("POST", f"{url}/chatkit", content=body, headers=headers) as r:
        assert r.status_code == 200, (await r.aread())[:500]
        assert r.headers["content-type"].startswith("text/event-stream")
        turn = Turn(r.http_version, start)
        async for chunk in r.aiter_bytes():
            for event in decoder.feed(chunk):
                turn.events.append(event)
                turn.times.append(time.monotonic())
    turn.end = time.monotonic()
    return turn


async def call(
    client: httpx.AsyncClient, url: str, request: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """POST a non-streaming request and return its JSON."""
    response = await client.post(f"{url}/chatkit", content=encode(request), headers=headers)
    assert response.status_code == 200, response.text[:500]
    return dict(response.json())


async def saved_messages(
    client: httpx.AsyncClient, url: str, thread_id: str, headers: dict[str, str], count: int
) -> list[tuple[str, str]]:
    """The thread's messages via threads.get_by_id, once at least `count` are saved."""

    async def probe() -> list[tuple[str, str]] | None:
        thread = await call(client, url, get_thread(thread_id), headers)
        messages = message_texts(thread["items"]["data"])
        return messages if len(messages) >= count else None

    return await poll(probe, SAVE_SECONDS, f"{count} messages in {thread_id}")


async def assert_turn(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], mock: OpenAIMock, tokens: int = 30
) -> Turn:
    """A new thread streams its reply incrementally and keeps both messages."""
    text = unique(f"[tokens {tokens}] [delay 0.05]")
    turn = await stream_turn(client, url, create_thread(text), headers)
    assert assistant_text(turn.events) == words(tokens)
    # One clock for both (the mock runs in this process): a buffered reply could only
    # reach the client after the model's last word. 30 words leave 1.5 s for the first to
    # arrive, enough for a just-started server's first turn on a busy machine (10 were not).
    assert turn.first_delta < record_of(mock, text).last_delta_at, "reply was buffered"
    messages = await saved_messages(client, url, thread_id_of(turn.events), headers, 2)
    assert messages == [("user_message", text), ("assistant_message", words(tokens))]
    return turn


async def test_http1_streams_deltas_before_the_reply_ends(
    server: ServerProcess, mock: OpenAIMock
) -> None:
    with anyio.fail_after(TEST_SECONDS):
        async with http_client() as client:
            turn = await assert_turn(client, server.url, AUTH, mock)
    assert turn.http_version == "HTTP/1.1"


async def test_h2c_streams_deltas_before_the_reply_ends(
    server: ServerProcess, mock: OpenAIMock
) -> None:
    with anyio.fail_after(TEST_SECONDS):
        async with http_client(http1=False, http2=True) as client:
            turn = await assert_turn(client, server.url, AUTH, mock)
    assert turn.http_version == "HTTP/2"


async def test_h2c_multiplexes_conversations_on_one_connection(
    server: ServerProcess, mock: OpenAIMock
) -> None:
    turns: list[Turn] = []

    async def converse(client: httpx.AsyncClient) -> None:
        turns.append(await assert_turn(client, server.url, AUTH, mock, tokens=20))

    limits = httpx.Limits(max_connections=1)
    with anyio.fail_after(TEST_SECONDS):
        async with (
            http_client(http1=False, http2=True, limits=limits) as client,
            anyio.create_task_group() as group,
        ):
            for _ in range(5):
                group.start_soon(converse, client)
    assert [turn.http_version for turn in turns] == ["HTTP/2"] * 5
    # One connection at a time: the replies overlapped, so they were multiplexed on it.
    assert max(turn.first_delta for turn in turns) < min(turn.end for turn in turns)


async def test_an_idle_connection_outlives_hypercorns_default_keep_alive(
    server: ServerProcess,
) -> None:
    """A proxy keeps idle upstream connections ~60 s; closing them at 5 s risks 502s."""

    def local_port(response: httpx.Response) -> int:
        return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])

    limits = httpx.Limits(keepalive_expiry=IDLE_SECONDS * 4)
    with anyio.fail_after(TEST_SECONDS):
        async with httpx.AsyncClient(limits=limits) as client:
            first = await client.get(f"{server.url}/healthz")
            port = local_port(first)
            await anyio.sleep(IDLE_SECONDS)
            second = await client.get(f"{server.url}/healthz")
            assert first.status_code == second.status_code == 200
            assert local_port(second) == port, "the server closed the idle connection"


async def test_h2_over_tls_by_alpn(mock: OpenAIMock, tls: TLSFiles, tmp_path: Path) -> None:
    env = app_env(mock.base_url, tmp_path / "chat.db")
    with ServerProcess(env, workdir=tmp_path, certfile=tls.certfile, keyfile=tls.keyfile) as srv:
        assert srv.url.startswith("https://")
        with anyio.fail_after(TEST_SECONDS):
            async with http_client(http2=True, verify=tls.client_context) as client:
                turn = await assert_turn(client, srv.url, {}, mock)
    assert turn.http_version == "HTTP/2"


async def test_plain_hypercorn_command_serves_a_turn(mock: OpenAIMock, tmp_path: Path) -> None:
    hypercorn = str(Path(sys.executable).parent / "hypercorn")
    argv = [hypercorn, "tripchat.asgi:app", "--bind", f"{HOST}:{PORT_PLACEHOLDER}"]
    env = app_env(mock.base_url, tmp_path / "chat.db")
    with ServerProcess(env, argv, workdir=tmp_path, name="hypercorn") as srv:
        with anyio.fail_after(TEST_SECONDS):
            async with http_client() as client:
                turn = await assert_turn(client, srv.url, {}, mock)
    assert turn.http_version == "HTTP/1.1"


def run_to_exit(
    argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a server command that should give up at start; its output once it has."""
    return subprocess.run(
        argv,
        check=False,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=EXIT_SECONDS * 2,
    )


@pytest.mark.parametrize("command", ["tripchat serve", "hypercorn", "hypercorn --workers 0"])
@pytest.mark.parametrize(
    "database",
    ["unreachable postgresql", "refused postgresql option", "sqlite in a missing folder"],
)
def test_a_database_that_cannot_open_ends_the_server_in_one_line(
    command: str, database: str, tmp_path: Path
) -> None:
    port = free_port()
    argv = {
        "tripchat serve": serve_argv(port),
        "hypercorn": [str(Path(sys.executable).parent / "hypercorn"), "tripchat.asgi:app"],
        "hypercorn --workers 0": [
            str(Path(sys.executable).parent / "hypercorn"),
            "--workers",
            "0",
            "tripchat.asgi:app",
        ],
    }[command]
    if command.startswith("hypercorn"):
        argv += ["--bind", f"{HOST}:{port}"]
    db_url = {
        "unreachable postgresql": f"postgresql://tripchat@{HOST}:{free_port()}/tripchat",
        "refused postgresql option": f"postgresql://tripchat@{HOST}:{free_port()}/t?sslmode=no",
        "sqlite in a missing folder": f"sqlite:///{tmp_path / 'missing' / 'chat.db'}",
    }[database]
    env = minimal_env(
        app_env("http://127.0.0.1:9/v1", tmp_path / "unused.db", CHATKIT_DB_URL=db_url)
    )
    start = time.monotonic()
    result = run_to_exit(argv, env, tmp_path)
    assert time.monotonic() - start < EXIT_SECONDS, "the server took too long to give up"
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CHATKIT_DB_URL" in lines[0], result.stderr
    if command != "hypercorn":
        # Hypercorn 0.18's worker pool reports 0 whatever its worker's status.
        assert result.returncode == 2, result


def test_a_port_in_use_ends_tripchat_serve_in_one_line(tmp_path: Path) -> None:
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        env = minimal_env(app_env("http://127.0.0.1:9/v1", tmp_path / "chat.db"))
        result = run_to_exit(serve_argv(port), env, tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        f"tripchat: cannot listen on {HOST}:{port}: Address already in use"
    ]


async def test_procfile_web_command_serves_a_turn(mock: OpenAIMock, tmp_path: Path) -> None:
    argv = procfile_argv()
    env = {
        "OPENAI_BASE_URL": mock.base_url,
        "OPENAI_API_KEY": "test",
        "CHATKIT_DB_URL": f"sqlite:///{tmp_path / 'chat.db'}",
    }
    with ServerProcess(env, argv, workdir=tmp_path, name="procfile") as srv:
        with anyio.fail_after(TEST_SECONDS):
            async with http_client() as client:
                health = await client.get(f"{srv.url}/healthz")
                assert health.status_code == 200, health.text
                await assert_turn(client, srv.url, {}, mock)


async def test_http1_disconnect_cancels_the_run_and_keeps_the_partial_reply(
    server: ServerProcess, mock: OpenAIMock
) -> None:
    text = unique("[tokens 200] [delay 0.05]")
    events: list[dict[str, Any]] = []
    decoder = SSEDecoder()
    with anyio.fail_after(TEST_SECONDS):
        async with http_client() as client:
            request = encode(create_thread(text))
            async with client.stream(
                "POST", f"{server.url}/chatkit", content=request, headers=AUTH
            ) as response:
                async for chunk in response.aiter_bytes():
                    events += decoder.feed(chunk)
                    if sum(map(is_text_delta, events)) >= 3:
                        break
        # The client is closed: the connection is gone, as when a tab closes.
        await reply_cut_short(mock, text)
        thread_id = thread_id_of(events)
        async with http_client() as client:
            messages = await saved_messages(client, server.url, thread_id, AUTH, 2)
            assert_partial_reply(messages, text, assistant_text(events))
            follow_up = unique("[tokens 3]")
            turn = await stream_turn(client, server.url, add_message(thread_id, follow_up), AUTH)
            assert assistant_text(turn.events) == words(3)
            messages = await saved_messages(client, server.url, thread_id, AUTH, 4)
    assert messages[2:] == [("user_message", follow_up), ("assistant_message", words(3))]


# -- HTTP/2 spoken with the h2 package, to reset streams as a browser does -----------------


class ConnectionLost(AssertionError):
    """The server closed the HTTP/2 connection (every stream on it is gone)."""


@dataclass
class H2Response:
    """What arrived on one stream: status, headers, body and SSE events."""

    stream_id: int
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    events: list[dict[str, Any]] = field(default_factory=list)
    decoder: SSEDecoder = field(default_factory=SSEDecoder)
    ended: anyio.Event = field(default_factory=anyio.Event)
    reset: bool = False

    @property
    def deltas(self) -> int:
        """How many text deltas arrived so far."""
        return sum(map(is_text_delta, self.events))

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class H2Client:
    """HTTP/2 with prior knowledge over a plain socket; can RST_STREAM one stream."""

    def __init__(self, sock: SocketStream, authority: str) -> None:
        self.sock = sock
        self.authority = authority
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.responses: dict[int, H2Response] = {}
        self.lost: str | None = None
        self._write = anyio.Lock()
        self._changed = anyio.Event()

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[H2Client]:
        """Open a connection and read from it in the background until the block ends."""
        async with await anyio.connect_tcp(HOST, port) as sock:
            client = cls(sock, f"{HOST}:{port}")
            client.conn.initiate_connection()
            # A wide connection window: frames of a reset stream are not acknowledged.
            client.conn.increment_flow_control_window(2**30)
            await client._flush()
            async with anyio.create_task_group() as group:
                group.start_soon(client._read)
                yield client
                group.cancel_scope.cancel()

    async def request(
        self,
        body: bytes,
        headers: dict[str, str],
        *,
        content_length: bool = True,
        chunks: int = 1,
        pause: float = 0.0,
        method: str = "POST",
        path: str = "/chatkit",
        content_type: str = "application/json",
    ) -> H2Response:
        """Send body (to POST /chatkit) in `chunks` DATA frames `pause` seconds apart."""
        stream_id = self.conn.get_next_available_stream_id()
        response = self.responses[stream_id] = H2Response(stream_id)
        fields = [
            (":method", method),
            (":scheme", "http"),
            (":authority", self.authority),
            (":path", path),
            ("content-type", content_type),
            *headers.items(),
        ]
        if content_length:
            fields.append(("content-length", str(len(body))))
        self.conn.send_headers(stream_id, fields)
        await self._flush()
        size = -(-len(body) // chunks)
        for offset in range(0, len(body), size):
            if offset and pause:
                await anyio.sleep(pause)
            await self._send_data(stream_id, body[offset : offset + size])
        self.conn.end_stream(stream_id)
        await self._flush()
        return response

    async def reset(self, response: H2Response) -> None:
        """Cancel one stream, as a browser does when a fetch is aborted."""
        self.conn.reset_stream(response.stream_id, h2.errors.ErrorCodes.CANCEL)
        await self._flush()

    async def _send_data(self, stream_id: int, data: bytes) -> None:
        while data:
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                changed = self._changed
                self._check()
                await changed.wait()
                continue
            self.conn.send_data(stream_id, data[:window])
            data = data[window:]
            await self._flush()

    def _check(self) -> None:
        if self.lost is not None:
            raise ConnectionLost(f"the server closed the HTTP/2 connection: {self.lost}")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _lose(self, reason: str) -> None:
        self.lost = self.lost or reason
        for response in self.responses.values():
            response.ended.set()
        self._notify()

    async def _flush(self) -> None:
        self._check()
        async with self._write:
            data = self.conn.data_to_send()
            if data:
                try:
                    await self.sock.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    self._lose(repr(exc))
        self._check()

    async def _read(self) -> None:
        try:
            while self.lost is None:
                for event in self.conn.receive_data(await self.sock.receive(65536)):
                    self._handle(event)
                await self._flush()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
            self._lose(repr(exc) or "end of stream")
        except ConnectionLost:
            pass

    def _handle(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        response = self.responses.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.ResponseReceived) and response is not None:
            response.headers = {k.decode(): v.decode() for k, v in event.headers}
            response.status = int(response.headers[":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if response is not None and event.data:
                response.body += event.data
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    response.events += response.decoder.feed(event.data)
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            if response is not None:
                response.reset = isinstance(event, h2.events.StreamReset)
                response.ended.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._lose(f"GOAWAY {event.error_code!r}")
        self._notify()

    async def finish(self, response: H2Response) -> H2Response:
        """Wait for the stream to end; fail if the connection went down instead."""
        await response.ended.wait()
        self._check()
        assert not response.reset, f"stream {response.stream_id} was reset by the server"
        return response

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming request on this connection; its JSON answer."""
        response = await self.finish(await self.request(encode(request), AUTH))
        assert response.status == 200, response.body[:500]
        return dict(response.json())


async def wait_deltas(response: H2Response, count: int) -> None:
    """Until `count` text deltas of this stream have arrived."""

    async def probe() -> bool | None:
        return True if response.deltas >= count or response.ended.is_set() else None

    await poll(probe, 5.0, f"{count} deltas on stream {response.stream_id}")
    assert response.deltas >= count, f"stream {response.stream_id} ended early: {response}"


async def test_h2_rst_stream_cancels_one_reply_and_spares_the_others(
    server: ServerProcess, mock: OpenAIMock
) -> None:
    long_text, short_text = (
        unique("[tokens 200] [delay 0.05]"),
        unique("[tokens 30] [delay 0.05]"),
    )
    with anyio.fail_after(TEST_SECONDS):
        async with H2Client.connect(server.port) as h2c:
            cancelled = await h2c.request(encode(create_thread(long_text)), AUTH)
            spared = await h2c.request(encode(create_thread(short_text)), AUTH)
            await wait_deltas(cancelled, 3)
            await h2c.reset(cancelled)
            seen = assistant_text(cancelled.events)
            await h2c.finish(spared)
            assert spared.status == 200
            assert assistant_text(spared.events) == words(30)
            await reply_cut_short(mock, long_text)

            async def partial() -> list[tuple[str, str]] | None:
                thread = await h2c.call(get_thread(thread_id_of(cancelled.events)))
                messages = message_texts(thread["items"]["data"])
                return messages if len(messages) >= 2 else None

            messages = await poll(partial, SAVE_SECONDS, "the partial reply to be saved")
    assert_partial_reply(messages, long_text, seen)


@dataclass(frozen=True)
class Refusal:
    """A request the server answers before reading its whole body."""

    headers: dict[str, str]
    size: int
    content_length: bool
    status: int
    method: str = "POST"
    path: str = "/chatkit"


REFUSALS = {
    "413-declared-length": Refusal(AUTH, BIG_BODY, True, 413),
    "413-no-length": Refusal(AUTH, BIG_BODY, False, 413),
    "401-no-token": Refusal({}, 0, True, 401),
    "404-unknown-path": Refusal(AUTH, BIG_BODY, True, 404, path="/nope"),
    "405-wrong-method": Refusal(AUTH, BIG_BODY, True, 405, method="PUT"),
}


def refused_body(size: int) -> bytes:
    """A threads.create body padded to `size` bytes (a normal small one for size 0)."""
    return encode(create_thread(unique("hello") + " " * max(size - 200, 0)))


@pytest.mark.parametrize("case", REFUSALS)
async def test_h2_refusal_keeps_the_other_streams_alive(server: ServerProcess, case: str) -> None:
    """Hypercorn issue 329: DATA after the answer must not drop the connection."""
    refusal = REFUSALS[case]
    body = refused_body(refusal.size)
    with anyio.fail_after(TEST_SECONDS):
        async with H2Client.connect(server.port) as h2c:
            running_body = encode(create_thread(unique("[tokens 40] [delay 0.05]")))
            running = await h2c.request(running_body, AUTH)
            await wait_deltas(running, 1)
            refused = await h2c.request(
                body,
                refusal.headers,
                content_length=refusal.content_length,
                chunks=16,
                pause=0.01,
                method=refusal.method,
                path=refusal.path,
            )
            await h2c.finish(refused)
            assert refused.status == refusal.status, refused
            assert refused.json()["error"]["status"] == refusal.status
            await h2c.finish(running)
    assert running.status == 200
    assert assistant_text(running.events) == words(40)


@pytest.mark.parametrize("case", REFUSALS)
async def test_http1_refusal(server: ServerProcess, case: str) -> None:
    refusal = REFUSALS[case]
    body = refused_body(refusal.size)

    async def chunked() -> AsyncIterator[bytes]:
        for offset in range(0, len(body), 16 * 1024):
            yield body[offset : offset + 16 * 1024]

    content: bytes | AsyncIterator[bytes] = body if refusal.content_length else chunked()
    with anyio.fail_after(TEST_SECONDS):
        async with http_client() as client:
            response = await client.request(
                refusal.method, server.url + refusal.path, content=content, headers=refusal.headers
            )
    assert response.status_code == refusal.status, response.text[:500]
    assert response.json()["error"]["status"] == refusal.status
