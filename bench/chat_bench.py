"""Streaming chat turns under load: tripchat against the docs' reference and a bare ceiling.

    python bench/chat_bench.py [--concurrency 1,10,100] [--turns 3] [--min-turns 300]
        [--rounds 3] [--tokens 20] [--delay 0] [--long 400] [--long-concurrency 10]
        [--long-min-turns 60] [--hold 1000] [--hold-seconds 30]
        [--backends sqlite[,postgres]] [--pg-url postgresql://...] [--processes 1[,2]]
        [--burst 1000] [--servers ceiling,reference,tripchat] [--profile bench/profiles]
        [--json out.json]

One run starts the OpenAI mock (tests/openai_mock.py) as its own process, then every
server as its own process (own process group) on 127.0.0.1:

* ceiling   - bench/ceiling_app.py: the SSE a tripchat turn sends, from a bare ASGI app
              under tripchat's own Hypercorn `serve`; no ChatKit, agent or store.
* reference - bench/reference_app.py: the chatkit-python docs' FastAPI + uvicorn app with
              an in-memory store and the same agent, pointed at the same mock.
* tripchat  - `python -m tripchat.cli serve` (the Procfile's command) on a SQLite file,
              and with `--backends postgres` on `--pg-url` (its tables dropped first).
              `--processes 1,2` adds tripchat-<backend>-x2: two `serve` processes on two
              ports sharing one database (its own SQLite file, or a fresh database
              `<name>_x2` next to --pg-url's); each conversation's turns go round-robin
              over the processes (offset by conversation), CPU and peak RSS are summed
              over both process groups, and read-back also goes round-robin.

Each server is left to finish its start-up work, warmed up, and left idle again. Then, for
each C, the servers take turns (order rotated every round, `--rounds` rounds, so the
shared machine's noise falls on all alike): C workers run conversations of T turns
(threads.create, then add_user_message) until `--min-turns` turns per server and C are
done. The client measures time to first SSE event and to first text delta, turns/s,
events/s and errors (non-200, `error` events, wrong text); /proc gives the server's peak
RSS (VmHWM, reset per phase) and CPU seconds per turn (every thread of every process in
its group). On PostgreSQL the cluster's own CPU (the postmaster and its children, found
through pg_backend_pid()) is reported apart, when the cluster runs on this machine.
Then `--hold` streams are held open at once against the reference and the
first tripchat backend (replies `[tokens 100] [delay S]`: a delta every S seconds, S under
the server's 60 s model timeout, so every stream outlasts the ramp; opened in waves of
100) for RSS per open stream; then every reader leaves at
once and, 3 s later, the bench counts the model calls the mock still has open and the
partial replies stored. Long replies (`--long N`, `[tokens N]` in the message) measure
CPU per streamed delta at C in `--long-concurrency`; each conversation is its own user
(`X-User-Id`). Before the phases, `--burst`
TCP connects are opened at once against each idle server: a connect that needs a SYN
retransmit (over 0.9 s) found the accept backlog full. Turns count such connects too.
Finally every conversation is read back (`items.list`) from the ChatKit servers: nothing
may be lost.

With `--profile DIR`, py-spy records the reference and tripchat during extra C=10 rounds
(DIR/<server>.txt raw stacks, DIR/<server>.svg flamegraph) and bench/profile_stacks.py
summarises them. The soft RLIMIT_NOFILE is raised to the hard limit first; the mock and
the servers inherit it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _procs import ProcessGroup, postgres_cluster, raise_fd_limit  # noqa: E402
from _servers import ServerSpec, empty_postgres, openai_mock, server_specs  # noqa: E402
from _tables import fmt, machine, pct, ratio, table  # noqa: E402
from chatkit_client import (  # noqa: E402
    TEXT_DELTA,
    add_message,
    create_thread,
    encode,
    list_items,
    message_texts,
)
from profile_stacks import summarise  # noqa: E402
from servers import ServerProcess  # noqa: E402

STREAMS_PER_CLIENT = 64
"""Conversations sharing one httpx client: a huge pool costs the client O(n) per request."""
HOLD_WAVE = 100
"""Held streams opened per wave, each wave waiting for its first deltas."""
HOLD_DELTAS = 100
"""A held reply's deltas: enough that none ends before its reader leaves."""
WARMUP_CONVERSATIONS = 10
VERIFY_PARALLEL = 16
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLOSE_WAIT_SECONDS = 30.0
ABANDON_SECONDS = 3.0
"""Target 3: every model call closed and every partial reply saved this long after the
clients left."""
SYN_RETRY_SECONDS = 0.9
"""A TCP connect slower than this waited for a SYN retransmit (the first comes after 1 s):
the server's accept backlog was full."""


# -- the client -------------------------------------------------------------------


@dataclass
class TurnResult:
    """One streamed turn as the client saw it."""

    ok: bool
    ttfe: float | None = None
    ttft: float | None = None
    events: int = 0
    thread_id: str | None = None
    text: str = ""
    error: str | None = None
    connect: float | None = None
    """Seconds the TCP connect took, when this turn opened a new connection."""


@dataclass
class Conversation:
    """A conversation the client had: what it sent and what it got, to read back later."""

    user: str
    thread_id: str | None = None
    exchanges: list[tuple[str, str]] = field(default_factory=list)
    held: bool = False
    """Its reader left mid-reply: the server may have kept more than was read."""


class SSEFrames:
    """Splits SSE bytes into `data:` payloads."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        *frames, self._buffer = self._buffer.split(b"\n\n")
        return [frame[6:] for frame in frames if frame.startswith(b"data: ")]


async def run_turn(
    client: httpx.AsyncClient,
    url: str,
    user: str,
    body: dict[str, Any],
    expected: str | None,
    on_first_delta: Callable[[], None] | None = None,
    result: TurnResult | None = None,
) -> TurnResult:
    """POST one streaming request and read the stream to its end, filling `result` (a
    caller that cancels the turn still has what was read so far)."""
    result = result or TurnResult(ok=False)
    started = time.perf_counter()

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name == "connection.connect_tcp.started":
            result.connect = time.perf_counter()
        elif name == "connection.connect_tcp.complete" and result.connect is not None:
            result.connect = time.perf_counter() - result.connect

    try:
        async with client.stream(
            "POST",
            url,
            content=encode(body),
            extensions={"trace": trace},
            headers={"X-User-Id": user},
        ) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}"
                return result
            frames = SSEFrames()
            async for chunk in response.aiter_raw():
                for payload in frames.feed(chunk):
                    _on_event(
                        result, json.loads(payload), time.perf_counter() - started, on_first_delta
                    )
    except (httpx.HTTPError, ValueError) as exc:
        result.error = type(exc).__name__
        return result
    if result.error is None and (
        (expected is None and not result.text) or (expected is not None and result.text != expected)
    ):
        result.error = "missing text"
    result.ok = result.error is None
    return result


def _on_event(
    result: TurnResult,
    event: dict[str, Any],
    elapsed: float,
    on_first_delta: Callable[[], None] | None,
) -> None:
    result.events += 1
    if result.ttfe is None:
        result.ttfe = elapsed
    kind = event.get("type")
    if kind == "thread.created":
        result.thread_id = event["thread"]["id"]
    elif kind == "thread.item.updated" and event["update"]["type"] == TEXT_DELTA:
        if result.ttft is None:
            result.ttft = elapsed
            if on_first_delta is not None:
                on_first_delta()
        result.text += event["update"]["delta"]
    elif kind == "error":
        result.error = f"error event: {event.get('message', event.get('code'))}"[:80]


async def converse(
    client: httpx.AsyncClient,
    urls: Sequence[str],
    conversation: Conversation,
    texts: Sequence[str],
    expected: str | None,
    results: list[TurnResult],
    offset: int = 0,
) -> None:
    """One conversation: threads.create, then add_user_message for each further text.
    Turn t goes to urls[(offset + t) % len(urls)]: with several server processes the
    conversation moves between them (its state is in the shared database)."""
    for t, text in enumerate(texts):
        if conversation.thread_id is None:
            body = create_thread(text)
        else:
            body = add_message(conversation.thread_id, text)
        url = urls[(offset + t) % len(urls)]
        turn = await run_turn(client, url, conversation.user, body, expected)
        results.append(turn)
        conversation.thread_id = conversation.thread_id or turn.thread_id
        if conversation.thread_id is None:
            return  # no thread to continue: the rest of this conversation is lost anyway
        conversation.exchanges.append((text, turn.text))


def clients(count: int, timeout: float) -> list[httpx.AsyncClient]:
    """Enough HTTP/1.1 clients for `count` concurrent streams, each with a fitting pool."""
    per_client = min(count, STREAMS_PER_CLIENT)
    limits = httpx.Limits(max_connections=per_client + 4, max_keepalive_connections=per_client + 4)
    return [
        httpx.AsyncClient(
            limits=limits, timeout=httpx.Timeout(timeout, connect=30.0), trust_env=False
        )
        for _ in range(math.ceil(count / per_client))
    ]


# -- phases --------------------------------------------------------------------------


@dataclass
class Phase:
    """One server x concurrency measurement (one round, or rounds merged)."""

    server: str
    concurrency: int
    deltas: int
    """Text deltas per reply (the mock's default, or a long reply's `[tokens N]`)."""
    turns: int
    seconds: float
    ttfe_ms: list[float]
    ttft_ms: list[float]
    events: int
    errors: int
    error_kinds: dict[str, int]
    peak_rss_mb: float
    cpu_s: float
    cpu_ticks_s: float
    mock_cpu_s: float
    client_cpu_s: float
    slow_connects: int
    rounds_cpu_ms: list[float] = field(default_factory=list)
    db_cpu_s: float = math.nan
    """CPU of the PostgreSQL cluster's processes (NaN: SQLite, or not measurable)."""

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.seconds

    @property
    def cpu_ms_per_turn(self) -> float:
        return 1000 * self.cpu_s / max(self.turns, 1)

    @property
    def cpu_us_per_delta(self) -> float:
        return 1000 * self.cpu_ms_per_turn / max(self.deltas, 1)

    @property
    def label(self) -> str:
        return f"{self.deltas}x{self.concurrency}"

    @classmethod
    def merge(cls, rounds: Sequence[Phase]) -> Phase:
        """The rounds as one phase: sums, pooled latencies, the highest peak."""
        kinds: dict[str, int] = {}
        for one in rounds:
            for kind, count in one.error_kinds.items():
                kinds[kind] = kinds.get(kind, 0) + count
        return cls(
            server=rounds[0].server,
            concurrency=rounds[0].concurrency,
            deltas=rounds[0].deltas,
            turns=sum(r.turns for r in rounds),
            seconds=sum(r.seconds for r in rounds),
            ttfe_ms=[x for r in rounds for x in r.ttfe_ms],
            ttft_ms=[x for r in rounds for x in r.ttft_ms],
            events=sum(r.events for r in rounds),
            errors=sum(r.errors for r in rounds),
            error_kinds=kinds,
            peak_rss_mb=max(r.peak_rss_mb for r in rounds),
            cpu_s=sum(r.cpu_s for r in rounds),
            cpu_ticks_s=sum(r.cpu_ticks_s for r in rounds),
            mock_cpu_s=sum(r.mock_cpu_s for r in rounds),
            client_cpu_s=sum(r.client_cpu_s for r in rounds),
            slow_connects=sum(r.slow_connects for r in rounds),
            rounds_cpu_ms=[r.cpu_ms_per_turn for r in rounds],
            db_cpu_s=sum(r.db_cpu_s for r in rounds),
        )


@dataclass
class Meters:
    """Server (precise and in ticks), mock and client CPU seconds, read together."""

    server: ProcessGroup
    mock: ProcessGroup
    db: ProcessGroup | None = None

    def read(self) -> tuple[float, float, float, float, float]:
        return (
            self.server.cpu_seconds(),
            self.server.cpu_ticks_seconds(),
            self.mock.cpu_seconds(),
            time.process_time(),
            self.db.cpu_seconds() if self.db is not None else math.nan,
        )


@dataclass
class Target:
    """A running server the client talks to."""

    name: str
    urls: list[str]
    meters: Meters
    conversations: list[Conversation] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The first process's URL (held streams, connect bursts)."""
        return self.urls[0]


def reply_text(deltas: int) -> str:
    """What the mock answers with `deltas` text deltas."""
    return "".join(f"w{i} " for i in range(deltas))


async def run_phase(
    target: Target, concurrency: int, count: int, turns: int, tag: str, deltas: int
) -> Phase:
    """`count` conversations of `turns` turns, `concurrency` of them at any moment, each
    conversation its own user (`X-User-Id`), each reply `deltas` text deltas long."""
    pool = clients(concurrency, 120.0)
    convs = [Conversation(f"bench-{tag}-{i}") for i in range(count)]
    todo = iter(enumerate(convs))
    results: list[TurnResult] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for i, conv in todo:  # one shared iterator: each worker takes the next conversation
            texts = [
                f"Plan a trip ({tag}, conversation {i}, turn {t}) [tokens {deltas}]"
                for t in range(turns)
            ]
            await converse(client, target.urls, conv, texts, reply_text(deltas), results, i)

    meters = target.meters
    meters.server.reset_peak()
    before = meters.read()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(pool[w % len(pool)]) for w in range(concurrency)))
    finally:
        await asyncio.gather(*(client.aclose() for client in pool))
    seconds = time.perf_counter() - started
    after = meters.read()
    target.conversations.extend(convs)
    error_kinds: dict[str, int] = {}
    for turn in results:
        if turn.error:
            error_kinds[turn.error] = error_kinds.get(turn.error, 0) + 1
    if count * turns > len(results):
        error_kinds["turns never sent"] = count * turns - len(results)
    return Phase(
        server=target.name,
        concurrency=concurrency,
        deltas=deltas,
        turns=len(results),
        seconds=seconds,
        ttfe_ms=[1000 * r.ttfe for r in results if r.ttfe is not None],
        ttft_ms=[1000 * r.ttft for r in results if r.ttft is not None],
        events=sum(r.events for r in results),
        errors=sum(error_kinds.values()),
        error_kinds=error_kinds,
        peak_rss_mb=meters.server.peak_kb() / 1024,
        cpu_s=after[0] - before[0],
        cpu_ticks_s=after[1] - before[1],
        mock_cpu_s=after[2] - before[2],
        client_cpu_s=after[3] - before[3],
        slow_connects=slow_connects(results),
        db_cpu_s=after[4] - before[4],
    )


def slow_connects(results: Sequence[TurnResult]) -> int:
    """Turns whose new connection waited for a SYN retransmit."""
    return sum(r.connect is not None and r.connect > SYN_RETRY_SECONDS for r in results)


def workloads(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """(deltas per reply, concurrency, turns wanted) for each measured phase."""
    short = [(args.tokens, c, args.min_turns) for c in args.concurrency]
    long = [(args.long, c, args.long_min_turns) for c in args.long_concurrency if args.long]
    return short + long


def conversations_per_round(args: argparse.Namespace, concurrency: int, min_turns: int) -> int:
    """Enough conversations for `min_turns` over all rounds, a whole multiple of C."""
    wanted = math.ceil(min_turns / (args.rounds * args.turns))
    return int(concurrency * max(1, math.ceil(wanted / concurrency)))


@dataclass
class Hold:
    """RSS with `streams` replies held open at once."""

    server: str
    streams: int
    open_at_sample: int
    ramp_seconds: float
    rss_before_mb: float
    rss_holding_mb: float
    rss_after_mb: float
    errors: int
    cpu_ms_per_stream: float
    slow_connects: int
    calls_open_after_leaving: int
    """Model calls still open ABANDON_SECONDS after every client left."""
    partials_saved: int
    """Held replies whose partial text was stored, read back right after that wait."""
    closed_after_s: float
    """When the mock had every model call closed (after the read-back, then polled each
    second; NaN: not in 30 s)."""
    leave_cpu_ms_per_stream: float
    """Server CPU in the ABANDON_SECONDS after the leave: on a loaded machine, how much of
    the work of leaving it got done."""

    @property
    def kb_per_stream(self) -> float:
        return 1024 * (self.rss_holding_mb - self.rss_before_mb) / max(self.open_at_sample, 1)


def hold_text(i: int, seconds: float) -> str:
    """The message of held stream i: a delta every `seconds`."""
    return f"hold {i} [tokens {HOLD_DELTAS}] [delay {seconds}]"


async def hold_streams(target: Target, streams: int, seconds: float, mock_url: str) -> Hold:
    """Open `streams` replies that pause `seconds` after their first delta; sample RSS;
    then every client leaves at once: after ABANDON_SECONDS, count the model calls still
    open (the mock records disconnects) and the partial replies stored."""
    group = target.meters.server
    await group.settle()
    rss_before = group.rss_kb()
    cpu_before = group.cpu_seconds()
    since = len(await mock_requests(mock_url))
    pool = clients(streams, seconds + 120.0)
    opened = asyncio.Semaphore(0)
    open_now = [0]

    def first_delta() -> None:
        open_now[0] += 1
        opened.release()

    async def one(i: int) -> TurnResult:
        result = held[i]
        await run_turn(
            pool[i % len(pool)],
            target.url,
            f"bench-hold-{i}",
            create_thread(hold_text(i, seconds)),
            reply_text(HOLD_DELTAS),
            first_delta,
            result,
        )
        if result.ttft is not None:
            open_now[0] -= 1
        else:
            opened.release()  # never opened: do not keep the wave waiting
        return result

    held = [TurnResult(ok=False) for _ in range(streams)]
    started = time.perf_counter()
    tasks: list[asyncio.Task[TurnResult]] = []
    try:
        for wave in range(0, streams, HOLD_WAVE):
            size = min(HOLD_WAVE, streams - wave)
            tasks += [asyncio.create_task(one(i)) for i in range(wave, wave + size)]
            for _ in range(size):
                await asyncio.wait_for(opened.acquire(), seconds + 60)
        ramp = time.perf_counter() - started
        samples = []
        for _ in range(5):
            samples.append((group.rss_kb(), open_now[0]))
            await asyncio.sleep(0.2)
        rss_holding, open_at_sample = max(samples)
    finally:
        cpu_left, left = group.cpu_seconds(), time.perf_counter()
        for task in tasks:  # every reader leaves at once
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in pool))
    await asyncio.sleep(ABANDON_SECONDS)
    still_open = open_now = await open_model_calls(mock_url, since)
    closed_after = math.nan if open_now else time.perf_counter() - left  # not the read-back's
    leave_cpu = group.cpu_seconds() - cpu_left
    # Once each, after the leave: the reader may have had less than the server kept.
    convs = [
        Conversation(f"bench-hold-{i}", r.thread_id, [(hold_text(i, seconds), r.text)], held=True)
        for i, r in enumerate(held)
    ]
    target.conversations += convs
    saved = await partials_stored(target, convs)
    while open_now and time.perf_counter() - left < CLOSE_WAIT_SECONDS:
        await asyncio.sleep(1.0)
        open_now = await open_model_calls(mock_url, since)
        closed_after = math.nan if open_now else time.perf_counter() - left
    results = held
    return Hold(
        server=target.name,
        streams=streams,
        open_at_sample=open_at_sample,
        ramp_seconds=ramp,
        rss_before_mb=rss_before / 1024,
        rss_holding_mb=rss_holding / 1024,
        rss_after_mb=group.rss_kb() / 1024,
        errors=sum(r.thread_id is None or not r.text for r in results),
        cpu_ms_per_stream=1000 * (group.cpu_seconds() - cpu_before) / streams,
        slow_connects=slow_connects(results),
        calls_open_after_leaving=still_open,
        partials_saved=saved,
        closed_after_s=closed_after,
        leave_cpu_ms_per_stream=1000 * leave_cpu / streams,
    )


async def mock_requests(mock_url: str) -> list[dict[str, Any]]:
    """Every model call the mock has seen, in order."""
    async with httpx.AsyncClient(timeout=60.0, trust_env=False) as client:
        response = await client.get(mock_url.removesuffix("/v1") + "/_mock/requests")
    return list(response.json())


async def open_model_calls(mock_url: str, since: int) -> int:
    """Model calls from the `since`-th on that the mock is still answering (a server that
    left would have closed them; an earlier server's leftovers are not counted)."""
    return sum(not request["done"] for request in (await mock_requests(mock_url))[since:])


async def partials_stored(target: Target, convs: Sequence[Conversation]) -> int:
    """How many of these conversations have a stored, non-empty assistant reply."""
    gate = asyncio.Semaphore(VERIFY_PARALLEL)
    async with httpx.AsyncClient(timeout=60.0, trust_env=False) as client:

        async def stored(conv: Conversation) -> bool:
            if conv.thread_id is None:
                return False
            async with gate:
                response = await client.post(
                    target.url,
                    content=encode(list_items(conv.thread_id, 100)),
                    headers={"X-User-Id": conv.user},
                )
            texts = message_texts(response.json().get("data", []))
            return any(kind == "assistant_message" and text for kind, text in texts)

        return sum(await asyncio.gather(*(stored(conv) for conv in convs)))


@dataclass
class Burst:
    """`connects` TCP connects at once to an idle server."""

    server: str
    connects: int
    failed: int
    retried: int
    p50_ms: float
    max_ms: float


async def connect_burst(target: Target, count: int) -> Burst:
    """Open `count` connections at once, then close them: those slower than a SYN
    retransmit found the server's accept backlog full."""
    where = urlsplit(target.url)

    async def one() -> tuple[float, asyncio.StreamWriter]:
        started = time.perf_counter()
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(where.hostname, where.port), 30.0
        )
        return time.perf_counter() - started, writer

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = [r for r in results if isinstance(r, tuple)]
    for _, writer in opened:
        writer.close()
    times = [1000 * seconds for seconds, _ in opened]
    await asyncio.sleep(1.0)
    return Burst(
        target.name,
        count,
        count - len(opened),
        sum(t > 1000 * SYN_RETRY_SECONDS for t in times),
        pct(times, 50),
        max(times),
    )


def same_messages(got: list[tuple[str, str]], expected: list[tuple[str, str]], held: bool) -> bool:
    """Equal; for a held reply, the stored one may go on past what its reader took."""
    if not held or len(got) != len(expected):
        return got == expected
    return all(
        g == e or (g[0] == e[0] == "assistant_message" and g[1].startswith(e[1]))
        for g, e in zip(got, expected, strict=True)
    )


async def read_back(target: Target) -> list[str]:
    """Every conversation's messages, read back with items.list; returns what is missing."""
    problems: list[str] = []
    gate = asyncio.Semaphore(VERIFY_PARALLEL)
    async with httpx.AsyncClient(
        timeout=60.0, trust_env=False, limits=httpx.Limits(max_connections=VERIFY_PARALLEL)
    ) as client:

        async def check(i: int, conv: Conversation) -> None:
            if conv.thread_id is None:
                problems.append(f"{conv.user}: no thread was created")
                return
            expected = [
                pair
                for text, reply in conv.exchanges
                for pair in (("user_message", text), ("assistant_message", reply))
            ]
            async with gate:
                response = await client.post(
                    target.urls[i % len(target.urls)],
                    content=encode(list_items(conv.thread_id, 100)),
                    headers={"X-User-Id": conv.user},
                )
            if response.status_code != 200:
                problems.append(f"{conv.thread_id}: items.list HTTP {response.status_code}")
                return
            got = message_texts(response.json()["data"])
            if not same_messages(got, expected, conv.held):
                problems.append(f"{conv.thread_id}: stored {got}, expected {expected}"[:200])

        await asyncio.gather(*(check(i, conv) for i, conv in enumerate(target.conversations)))
    return problems


# -- profiling -------------------------------------------------------------------------


async def profiled(target: Target, args: argparse.Namespace) -> str:
    """py-spy on C=10 rounds, twice (raw stacks, then a flamegraph); the raw summarised.

    `--gil` samples only the thread holding the GIL: Python CPU time, not idle threads.
    The raw recording adds `--native`, so time in the cyclic garbage collector shows as
    such instead of being blamed on whatever line allocated when a collection started."""
    py_spy = Path(sys.executable).with_name("py-spy")
    outdir: Path = args.profile
    outdir.mkdir(parents=True, exist_ok=True)
    for kind, suffix, extra in (("raw", "txt", ["--native"]), ("flamegraph", "svg", [])):
        recorder = await asyncio.create_subprocess_exec(
            str(py_spy),
            "record",
            "--pid",
            str(target.meters.server.pgid),
            "--gil",
            *extra,
            "--rate",
            "250",
            "--format",
            kind,
            "-o",
            str(outdir / f"{target.name}.{suffix}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(1.0)
            for r in range(args.profile_rounds):
                await run_phase(
                    target,
                    10,
                    10,
                    args.turns,
                    f"{target.name}-{kind}-{r}",
                    args.long or args.tokens,
                )
        finally:
            recorder.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(recorder.wait(), 30)
            except TimeoutError:
                recorder.kill()
                await recorder.wait()
    return summarise(outdir / f"{target.name}.txt")


# -- the run ---------------------------------------------------------------------------


@dataclass
class ServerRun:
    """Everything measured for one server."""

    spec: ServerSpec
    rounds: dict[tuple[int, int], list[Phase]] = field(default_factory=dict)
    """Rounds by (deltas per reply, concurrency)."""
    burst: Burst | None = None
    hold: Hold | None = None
    lost: list[str] = field(default_factory=list)
    verified: int = 0
    profile: str | None = None

    @property
    def phases(self) -> list[Phase]:
        """One merged phase per workload (deltas per reply, concurrency)."""
        return [Phase.merge(rounds) for rounds in self.rounds.values()]


async def bench_servers(
    specs: list[ServerSpec], args: argparse.Namespace, mock: ProcessGroup, workdir: Path
) -> list[ServerRun]:
    """Start every server, interleave their phases round by round, then hold and read back.

    Interleaving (with the order rotated each round) spreads the shared machine's noise
    over all servers alike instead of loading it onto whichever ran at a bad moment.
    """
    runs = [ServerRun(spec) for spec in specs]
    with ExitStack() as stack:
        targets = []
        for spec in specs:
            db = None
            if spec.db_url and spec.db_url.startswith("postgres"):
                await empty_postgres(spec.db_url, args.pg_url)
                db = await postgres_cluster(spec.db_url)
            servers = [  # one after another: the first creates the schema
                stack.enter_context(
                    ServerProcess(
                        spec.env, list(spec.argv), workdir=workdir, name=f"{spec.name}-{n}"
                    )
                )
                for n in range(spec.processes)
            ]
            meters = Meters(ProcessGroup(*(s.pid for s in servers)), mock, db)
            targets.append(Target(spec.name, [f"{s.url}/chatkit" for s in servers], meters))
        for target in targets:
            await target.meters.server.settle()
            await run_phase(
                target,
                WARMUP_CONVERSATIONS,
                WARMUP_CONVERSATIONS,
                args.turns,
                f"{target.name}-warmup",
                args.tokens,
            )
            waited = await target.meters.server.settle()
            _progress(f"{target.name}: warmed up, idle after {waited:.1f}s")
        for run, target in zip(runs, targets, strict=False):
            if args.burst:
                run.burst = await connect_burst(target, args.burst)
                await target.meters.server.settle()
        for deltas, concurrency, min_turns in workloads(args):
            count = conversations_per_round(args, concurrency, min_turns)
            for r in range(args.rounds):
                for i in range(len(runs)):
                    run, target = runs[(i + r) % len(runs)], targets[(i + r) % len(runs)]
                    if deltas != args.tokens and not run.spec.chatkit:
                        continue  # the ceiling replays a --tokens reply only
                    tag = f"{target.name}-d{deltas}-c{concurrency}-r{r}"
                    phase = await run_phase(target, concurrency, count, args.turns, tag, deltas)
                    run.rounds.setdefault((deltas, concurrency), []).append(phase)
                    _progress(
                        f"{target.name} {deltas} deltas C={concurrency} round {r}: "
                        f"{phase.turns_per_s:.1f} turns/s, "
                        f"{phase.cpu_ms_per_turn:.1f} CPU ms/turn, {phase.errors} errors"
                    )
        for run, target in zip(runs, targets, strict=False):
            if not run.spec.primary(args.first_db):
                continue
            if args.profile:
                run.profile = await profiled(target, args)
            if args.hold:
                run.hold = await hold_streams(target, args.hold, args.hold_seconds, args.mock_url)
                _progress(f"{target.name} hold: {run.hold.kb_per_stream:.0f} KB/stream")
        for run, target in zip(runs, targets, strict=False):
            if run.spec.chatkit:
                run.lost = await read_back(target)
                run.verified = len(target.conversations)
    return runs


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# -- the report -------------------------------------------------------------------------


def results_table(runs: list[ServerRun]) -> str:
    head = (
        "server", "deltas", "C", "ttfe p50", "p95", "p99", "ttft p50", "p95", "p99",
        "turns/s", "events/s", "errors", "peak RSS MB", "CPU ms/turn", "CPU µs/delta",
    )  # fmt: skip
    rows = [
        (
            p.server,
            p.deltas,
            p.concurrency,
            *(fmt(pct(p.ttfe_ms, q)) for q in (50, 95, 99)),
            *(fmt(pct(p.ttft_ms, q)) for q in (50, 95, 99)),
            fmt(p.turns_per_s, 1),
            fmt(p.events / p.seconds),
            p.errors,
            fmt(p.peak_rss_mb),
            fmt(p.cpu_ms_per_turn, 1),
            fmt(p.cpu_us_per_delta),
        )
        for run in runs
        for p in run.phases
    ]
    return table(head, rows)


CPU_TARGET = (
    "Target (issue 16): CPU per turn at most 0.5x the reference at 20 deltas, 0.33x at 400+."
)


def ratio_table(runs: list[ServerRun]) -> str:
    """tripchat against the reference and the ceiling, workload by workload, in this run."""
    by_name = {run.spec.name: {p.label: p for p in run.phases} for run in runs}
    head = ("tripchat", "vs", "deltas", "C", "turns/s", "CPU/turn (= CPU/delta)", "p99 TTFT")
    rows = []
    for run in runs:
        if run.spec.kind != "tripchat":
            continue
        for other in ("reference", "ceiling"):
            for label, mine in by_name[run.spec.name].items():
                base = by_name.get(other, {}).get(label)
                if base is not None:
                    rows.append(
                        (
                            run.spec.name,
                            other,
                            mine.deltas,
                            mine.concurrency,
                            ratio(mine.turns_per_s, base.turns_per_s),
                            ratio(mine.cpu_ms_per_turn, base.cpu_ms_per_turn),
                            ratio(pct(mine.ttft_ms, 99), pct(base.ttft_ms, 99)),
                        )
                    )
    return table(head, rows, left=2) + "\n\n" + CPU_TARGET


def context_table(runs: list[ServerRun]) -> str:
    lines = [
        (
            "| server | deltas x C | turns | wall s | server CPU s (ticks) | CPU ms/turn by round "
            "| PostgreSQL CPU ms/turn | mock CPU ms/turn | client CPU ms/turn "
            "| connects > 0.9 s | error kinds |"
        ),
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        for p in run.phases:
            per = 1000 / max(p.turns, 1)
            lines.append(
                f"| {p.server} | {p.label} | {p.turns} | {p.seconds:.2f} | "
                f"{p.cpu_s:.2f} ({p.cpu_ticks_s:.2f}) | "
                f"{' / '.join(f'{x:.1f}' for x in p.rounds_cpu_ms)} | "
                f"{fmt(p.db_cpu_s * per, 1)} | {p.mock_cpu_s * per:.1f} | "
                f"{p.client_cpu_s * per:.1f} | {p.slow_connects} | "
                f"{', '.join(f'{k}: {v}' for k, v in p.error_kinds.items()) or '-'} |"
            )
    return "\n".join(lines)


def burst_table(runs: list[ServerRun]) -> str:
    lines = [
        "| server | connects | failed | waited for a SYN retransmit | p50 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        b = run.burst
        if b is not None:
            lines.append(
                f"| {b.server} | {b.connects} | {b.failed} | {b.retried} | "
                f"{fmt(b.p50_ms, 1)} | {fmt(b.max_ms)} |"
            )
    return "\n".join(lines)


def hold_table(runs: list[ServerRun]) -> str:
    head = (
        "server", "streams", "open at sample", "ramp s", "RSS before MB", "RSS holding MB",
        "RSS after MB", "KB/stream", "CPU ms/stream", "errors", "connects > 0.9 s",
        f"model calls open {ABANDON_SECONDS:.0f} s after leaving", "partial replies saved",
        "all closed after s", f"CPU ms/stream in those {ABANDON_SECONDS:.0f} s",
    )  # fmt: skip
    rows = [
        (
            h.server,
            h.streams,
            h.open_at_sample,
            f"{h.ramp_seconds:.1f}",
            f"{h.rss_before_mb:.0f}",
            f"{h.rss_holding_mb:.0f}",
            f"{h.rss_after_mb:.0f}",
            f"{h.kb_per_stream:.0f}",
            f"{h.cpu_ms_per_stream:.1f}",
            h.errors,
            h.slow_connects,
            h.calls_open_after_leaving,
            h.partials_saved,
            f"{h.closed_after_s:.1f}",
            f"{h.leave_cpu_ms_per_stream:.2f}",
        )
        for run in runs
        if (h := run.hold) is not None
    ]
    return table(head, rows)


def report(runs: list[ServerRun], args: argparse.Namespace, seconds: float) -> str:
    parts = [
        "## Machine",
        f"{machine()}; RLIMIT_NOFILE for the servers: {args.nofile}",
        "",
        "## Command",
        "`" + " ".join([Path(sys.executable).name, *sys.argv]) + "`",
        (
            f"(C in {args.concurrency}; conversations of {args.turns} turns, at least "
            f"{args.min_turns} turns per server and C in {args.rounds} interleaved rounds; mock "
            f"{args.tokens} deltas/reply, {args.delay}s between deltas; took {seconds:.0f}s)"
        ),
        "",
        "## Turns",
        results_table(runs),
        "",
        "## Ratios",
        ratio_table(runs),
        "",
        "## Context (mock and client CPU share the 2 cores)",
        context_table(runs),
        "",
    ]
    if any(run.burst for run in runs):
        parts += [f"## {args.burst} TCP connects at once (idle servers)", burst_table(runs), ""]
    if any(run.hold for run in runs):
        parts += [
            f"## {args.hold} streams held open "
            f"([tokens {HOLD_DELTAS}] [delay {args.hold_seconds}])",
            hold_table(runs),
            "",
        ]
    parts.append("## Read back")
    for run in runs:
        if run.spec.chatkit:
            state = (
                "all stored"
                if not run.lost
                else f"{len(run.lost)} with problems: " + "; ".join(run.lost[:5])
            )
            parts.append(f"- {run.spec.name}: {run.verified} conversations read back, {state}")
    for run in runs:
        if run.profile:
            parts += [
                "",
                f"## Profile: {run.spec.name} (C=10 x {args.profile_rounds} rounds)",
                run.profile,
            ]
    return "\n".join(parts)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency", default="1,10,100", type=lambda s: [int(x) for x in s.split(",") if x]
    )
    parser.add_argument("--turns", type=int, default=3, help="turns per conversation")
    parser.add_argument(
        "--min-turns",
        type=int,
        default=300,
        help="turns per server and C, over all rounds (C=1 runs conversations "
        "one after another until there are this many)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds per C (servers take turns, order rotating)",
    )
    parser.add_argument("--tokens", type=int, default=20, help="text deltas per reply")
    parser.add_argument(
        "--long",
        type=int,
        default=400,
        help="text deltas per long reply (CPU per delta at a real itinerary's length); 0 skips",
    )
    parser.add_argument(
        "--long-concurrency", default="10", type=lambda s: [int(x) for x in s.split(",") if x]
    )
    parser.add_argument("--long-min-turns", type=int, default=60)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--hold", type=int, default=1000, help="streams held open; 0 skips")
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=30.0,
        help="seconds between a held reply's deltas (under the server's 60 s model timeout)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=1000,
        help="TCP connects opened at once per server (accept backlog); 0 skips",
    )
    parser.add_argument("--backends", default="sqlite", type=lambda s: s.split(","))
    parser.add_argument("--pg-url", help="PostgreSQL URL for --backends postgres")
    parser.add_argument(
        "--processes",
        default="1",
        type=lambda s: [int(x) for x in s.split(",")],
        help="tripchat `serve` processes per backend, e.g. 1,2: N>1 adds "
        "tripchat-<backend>-xN, N processes on one database, turns round-robin",
    )
    parser.add_argument(
        "--servers", default="ceiling,reference,tripchat", type=lambda s: s.split(",")
    )
    parser.add_argument("--profile", type=Path, help="record py-spy profiles into this dir")
    parser.add_argument("--profile-rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    if "postgres" in args.backends and not args.pg_url:
        parser.error("--backends postgres needs --pg-url")
    if not set(args.backends) <= {"sqlite", "postgres"}:
        parser.error("--backends takes sqlite and/or postgres")
    if not args.processes or min(args.processes) < 1:
        parser.error("--processes takes counts of 1 or more")
    return args


async def main_async(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    args.nofile = raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        workdir = Path(tmp)
        with openai_mock(args.tokens, args.delay, workdir) as (base_url, mock):
            args.mock_url = base_url
            specs = server_specs(args, base_url, workdir)
            args.first_db = next((s.db_url for s in specs if s.kind == "tripchat"), None)
            runs = await bench_servers(specs, args, mock, workdir)
    print(report(runs, args, time.perf_counter() - started))
    if args.json:
        rows = [
            {**asdict(run), "rounds": {f"{d}x{c}": r for (d, c), r in run.rounds.items()}}
            for run in runs
        ]
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 1 if any(run.lost or any(p.errors for p in run.phases) for run in runs) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
