"""Turns/s with one serving process against two: `tripchat serve --workers 1` vs `--workers 2`.

    python bench/processes_bench.py [--backends sqlite,postgres] [--pg-url postgresql://...]
        [--deltas 20,400] [--conversations 40] [--turns 3] [--rounds 2]

The OpenAI mock runs as its own process (tests/openai_mock.py), each server as its own
process group on 127.0.0.1; every conversation is its own user (`X-User-Id`) and does
`--turns` turns (threads.create, then add_user_message), `--conversations` at once,
replies of each `--deltas` length. Rounds alternate 1 and 2 workers so the shared
machine's noise falls on both. Printed per backend and reply length: turns/s, server CPU
per turn (every process of the group), the mock's and this load generator's CPU per
turn, and the ratio of two processes' turns/s to one's. On a machine with few cores the
mock and the load generator take cores the servers would use: the last column says how
much of the machine the run kept busy, which bounds the ratio it can show.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _procs import ProcessGroup, raise_fd_limit  # noqa: E402
from _servers import openai_mock  # noqa: E402
from chatkit_client import add_message, create_thread, encode, parse_sse  # noqa: E402
from conftest import empty_postgres  # noqa: E402
from servers import ServerProcess, free_port  # noqa: E402

TURN_SECONDS = 120.0


@dataclass
class Run:
    backend: str
    deltas: int
    workers: int
    turns: int = 0
    errors: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    mock_cpu: float = 0.0
    client_cpu: float = 0.0

    def add(self, other: Run) -> None:
        for name in ("turns", "errors", "seconds", "server_cpu", "mock_cpu", "client_cpu"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def turns_per_second(self) -> float:
        return self.turns / self.seconds if self.seconds else 0.0

    def per_turn_ms(self, cpu: float) -> float:
        return 1000 * cpu / self.turns if self.turns else 0.0

    @property
    def busy(self) -> float:
        """Cores kept busy by the server, the mock and the load generator together."""
        total = self.server_cpu + self.mock_cpu + self.client_cpu
        return total / self.seconds if self.seconds else 0.0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def converse(client: httpx.AsyncClient, url: str, deltas: int, turns: int) -> int:
    """One user's conversation; the number of turns that failed."""
    headers = {"X-User-Id": f"bench-{uuid.uuid4().hex[:12]}"}
    thread_id, failed = "", 0
    for turn in range(turns):
        text = f"turn {turn} [tokens {deltas}]"
        request = add_message(thread_id, text) if thread_id else create_thread(text)
        response = await client.post(url, content=encode(request), headers=headers)
        events = parse_sse(response.content) if response.status_code == 200 else []
        done = [e for e in events if e.get("type") == "thread.item.done"]
        if response.status_code != 200 or not done or any(e["type"] == "error" for e in events):
            failed += 1
        created = [e for e in events if e.get("type") == "thread.created"]
        thread_id = thread_id or (created[0]["thread"]["id"] if created else "")
    return failed


async def load(
    server: ServerProcess, mock: ProcessGroup, run: Run, conversations: int, turns: int
) -> None:
    group = ProcessGroup(server.pid)
    await group.settle()
    limits = httpx.Limits(max_connections=conversations, max_keepalive_connections=conversations)
    async with httpx.AsyncClient(trust_env=False, timeout=TURN_SECONDS, limits=limits) as client:
        url = f"{server.url}/chatkit"
        await converse(client, url, run.deltas, 1)  # warm-up, not counted
        cpu0, mock0, own0, t0 = (
            group.cpu_seconds(),
            mock.cpu_seconds(),
            own_cpu(),
            time.perf_counter(),
        )
        failed = await asyncio.gather(
            *(converse(client, url, run.deltas, turns) for _ in range(conversations))
        )
        run.seconds = time.perf_counter() - t0
        run.server_cpu = group.cpu_seconds() - cpu0
        run.mock_cpu = mock.cpu_seconds() - mock0
        run.client_cpu = own_cpu() - own0
    run.turns, run.errors = conversations * turns, sum(failed)


@contextmanager
def server(env: dict[str, str], workers: int, workdir: Path) -> Iterator[ServerProcess]:
    argv = [sys.executable, "-m", "tripchat.cli", "serve", "--host", "127.0.0.1"]
    argv += ["--port", "{port}", "--workers", str(workers)]
    with ServerProcess(env, argv, workdir=workdir, port=free_port(), name=f"w{workers}") as srv:
        yield srv
    if srv.returncode != 0:
        raise RuntimeError(f"the server exited {srv.returncode}:\n{srv.log()}")


async def bench(args: argparse.Namespace) -> list[Run]:
    totals: dict[tuple[str, int, int], Run] = {}
    workdir = Path(tempfile.mkdtemp(prefix="processes-bench-"))
    with openai_mock(20, 0.0, workdir) as (base_url, mock):
        for rnd in range(args.rounds):
            for backend in args.backends:
                for deltas in args.deltas:
                    order = (1, 2) if rnd % 2 == 0 else (2, 1)
                    for workers in order:
                        db_url = f"sqlite:///{workdir}/{backend}-{deltas}-{workers}-{rnd}.db"
                        if backend == "postgres":
                            await empty_postgres(args.pg_url)
                            db_url = args.pg_url
                        env = {
                            "OPENAI_BASE_URL": base_url,
                            "OPENAI_API_KEY": "bench",
                            "CHATKIT_DB_URL": db_url,
                            "CHATKIT_TRACING": "false",
                        }
                        run = Run(backend, deltas, workers)
                        with server(env, workers, workdir) as srv:
                            conversations = max(8, args.conversations * 20 // max(deltas, 20))
                            await load(srv, mock, run, conversations, args.turns)
                        print(
                            f"  round {rnd + 1} {backend} {deltas} deltas, {workers} worker(s): "
                            f"{run.turns_per_second:.1f} turns/s",
                            file=sys.stderr,
                            flush=True,
                        )
                        key = (backend, deltas, workers)
                        totals.setdefault(key, Run(backend, deltas, workers)).add(run)
    return list(totals.values())


def report(runs: Sequence[Run]) -> str:
    lines = [
        f"{os.cpu_count()} cores; each figure summed over every round",
        "",
        "| backend | deltas | workers | turns/s | server CPU ms/turn | mock ms/turn "
        "| load ms/turn | cores busy | errors | x2 / x1 turns/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r.backend, r.deltas, r.workers): r for r in runs}
    notes = []
    for r in runs:
        one = by_key.get((r.backend, r.deltas, 1))
        ratio = (
            f"{r.turns_per_second / one.turns_per_second:.2f}x" if one and r.workers == 2 else ""
        )
        lines.append(
            f"| {r.backend} | {r.deltas} | {r.workers} | {r.turns_per_second:.1f} "
            f"| {r.per_turn_ms(r.server_cpu):.0f} | {r.per_turn_ms(r.mock_cpu):.0f} "
            f"| {r.per_turn_ms(r.client_cpu):.0f} | {r.busy:.2f} | {r.errors} | {ratio} |"
        )
        if one and r.workers == 2 and r.turns_per_second < 1.7 * one.turns_per_second:
            cores = os.cpu_count() or 1
            rest = r.per_turn_ms(r.mock_cpu + r.client_cpu)
            notes.append(
                f"{r.backend}/{r.deltas}: two workers made {ratio} of one's turns/s with "
                f"{r.busy:.2f} of {cores} cores busy: the mock and this load generator took "
                f"{rest:.0f} ms per turn beside the server's {r.per_turn_ms(r.server_cpu):.0f}; "
                f"server CPU per turn went {one.per_turn_ms(one.server_cpu):.0f} -> "
                f"{r.per_turn_ms(r.server_cpu):.0f} ms (1 -> 2 workers)"
            )
    return "\n".join([*lines, "", *notes])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("TRIPCHAT_TEST_POSTGRES_URL", ""))
    parser.add_argument("--deltas", default="20,400")
    parser.add_argument(
        "--conversations", type=int, default=40, help="at 20 deltas; fewer for longer"
    )
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.deltas = [int(d) for d in args.deltas.split(",") if d]
    if "postgres" in args.backends and not args.pg_url:
        parser.error("postgres needs --pg-url (its tripchat tables are dropped)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    started = time.perf_counter()
    runs = asyncio.run(bench(args))
    print(report(runs))
    print(f"\n{time.perf_counter() - started:.0f} s; python {sys.version.split()[0]}")
    return 0 if all(r.errors == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
