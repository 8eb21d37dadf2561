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
import math
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _loadgen import converse  # noqa: E402
from _procs import ProcessGroup, cpu_seconds, postgres_cluster, raise_fd_limit  # noqa: E402
from _servers import openai_mock  # noqa: E402
from _tables import fmt, machine, ratio, table  # noqa: E402
from conftest import empty_postgres  # noqa: E402
from servers import HOST, ServerProcess, free_port  # noqa: E402

TURN_SECONDS = 120.0
START_SECONDS = 120.0


@dataclass
class Run:
    backend: str
    deltas: int
    workers: int
    turns: int = 0
    errors: int = 0
    delta_events: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    mock_cpu: float = 0.0
    client_cpu: float = 0.0
    db_cpu: float = 0.0
    loads: tuple[float, ...] = ()
    busiest: tuple[float, ...] = ()
    """Per run, the busiest worker's share of the workers' CPU (0.5 is an even split)."""

    def add(self, other: Run) -> None:
        for name in ("turns", "errors", "delta_events", "seconds", "loads", "busiest"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("server_cpu", "mock_cpu", "client_cpu", "db_cpu"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def turns_per_second(self) -> float:
        return self.turns / self.seconds if self.seconds else 0.0

    def per_turn_ms(self, cpu: float) -> float:
        return 1000 * cpu / self.turns if self.turns else 0.0

    @property
    def rest_cpu(self) -> float:
        """CPU beside the serving processes': the mock, the load generator, PostgreSQL."""
        return self.mock_cpu + self.client_cpu + self.db_cpu

    @property
    def busy(self) -> float:
        """Cores kept busy by the servers, the mock, the load generator and PostgreSQL."""
        return (self.server_cpu + self.rest_cpu) / self.seconds if self.seconds else 0.0

    @property
    def bound(self) -> float:
        """The most two workers can make of one's turns/s on this machine's cores: one
        worker has one core; two share every core with the rest of the run's CPU."""
        cores = len(os.sched_getaffinity(0))
        share = self.rest_cpu / self.server_cpu if self.server_cpu else 0.0
        return min(2.0, cores / (1.0 + share))


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def load(
    server: ServerProcess, others: dict[str, ProcessGroup | None], run: Run, users: int, turns: int
) -> None:
    group = ProcessGroup(server.pid)
    await group.settle()
    host, port = HOST, server.port
    await converse(host, port, "bench-warm-up", run.deltas, 1)  # not counted
    run.loads = (os.getloadavg()[0],)
    before = {name: g.cpu_seconds() for name, g in others.items() if g is not None}
    workers = [pid for pid in group.pids() if pid != server.pid or run.workers == 1]
    workers0 = [cpu_seconds(pid) for pid in workers]
    cpu0, own0, t0 = group.cpu_seconds(), own_cpu(), time.perf_counter()
    tallies = await asyncio.wait_for(
        asyncio.gather(
            *(
                converse(host, port, f"bench-{uuid.uuid4().hex[:12]}", run.deltas, turns)
                for _ in range(users)
            )
        ),
        TURN_SECONDS * turns,
    )
    run.seconds = time.perf_counter() - t0
    run.server_cpu = group.cpu_seconds() - cpu0
    each = [cpu_seconds(pid) - c for pid, c in zip(workers, workers0, strict=True)]
    run.busiest = (max(each) / sum(each),)
    run.client_cpu = own_cpu() - own0
    spent = {name: g.cpu_seconds() - before[name] for name, g in others.items() if g is not None}
    run.mock_cpu, run.db_cpu = spent["mock"], spent.get("db", 0.0)
    run.turns = users * turns
    run.errors = sum(t.failed for t in tallies)
    run.delta_events = sum(t.delta_events for t in tallies)


@contextmanager
def server(env: dict[str, str], workers: int, workdir: Path) -> Iterator[ServerProcess]:
    argv = [sys.executable, "-m", "tripchat.cli", "serve", "--host", HOST]
    argv += ["--port", "{port}", "--workers", str(workers)]
    srv = ServerProcess(env, argv, workdir=workdir, port=free_port(), name=f"w{workers}")
    try:
        srv.start().wait_ready(START_SECONDS)  # two workers start slowly on a loaded machine
        deadline = time.monotonic() + START_SECONDS
        while srv.log(10**8).count("Running on") < workers and time.monotonic() < deadline:
            time.sleep(0.1)  # every worker listening: a late one would see no connections
        yield srv
    finally:
        srv.stop()
    if srv.returncode != 0:
        raise RuntimeError(f"the server exited {srv.returncode}:\n{srv.log()}")


async def bench(args: argparse.Namespace) -> list[Run]:
    totals: dict[tuple[str, int, int], Run] = {}
    workdir = Path(tempfile.mkdtemp(prefix="processes-bench-"))
    cluster = await postgres_cluster(args.pg_url) if args.pg_url else None
    with openai_mock(20, 0.0, workdir, args.mock) as (base_url, mock):
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
                        others = {"mock": mock, "db": cluster if backend == "postgres" else None}
                        run = Run(backend, deltas, workers)
                        with server(env, workers, workdir) as srv:
                            users = max(8, args.conversations * 20 // max(deltas, 20))
                            await load(srv, others, run, users, args.turns)
                        print(
                            f"  round {rnd + 1} {backend} {deltas} deltas, {workers} worker(s): "
                            f"{run.turns_per_second:.1f} turns/s, "
                            f"{run.per_turn_ms(run.server_cpu):.1f} server ms/turn, "
                            f"load avg {run.loads[0]:.2f} at its start",
                            file=sys.stderr,
                            flush=True,
                        )
                        key = (backend, deltas, workers)
                        totals.setdefault(key, Run(backend, deltas, workers)).add(run)
    return list(totals.values())


def report(runs: Sequence[Run]) -> str:
    by_key = {(r.backend, r.deltas, r.workers): r for r in runs}
    rows = []
    for r in runs:
        one = by_key.get((r.backend, r.deltas, 1))
        two = r.workers == 2 and one is not None
        rows.append(
            [
                r.backend,
                r.deltas,
                r.workers,
                fmt(r.turns_per_second, 1),
                fmt(r.per_turn_ms(r.server_cpu), 1),
                fmt(r.turns / r.server_cpu if r.server_cpu else math.nan, 1),
                fmt(r.delta_events / r.turns if r.turns else math.nan, 1),
                fmt(r.per_turn_ms(r.mock_cpu), 1),
                fmt(r.per_turn_ms(r.client_cpu), 1),
                fmt(r.per_turn_ms(r.db_cpu), 1) if r.backend == "postgres" else "-",
                fmt(r.busy, 2),
                " ".join(f"{x:.1f}" for x in r.loads),
                " ".join(f"{x:.2f}" for x in r.busiest),
                r.errors,
                ratio(r.turns_per_second, one.turns_per_second) if two and one else "",
                ratio(r.turns / r.server_cpu, one.turns / one.server_cpu) if two and one else "",
                f"{r.bound:.2f}x" if two else "",
            ]
        )
    head = [
        "backend",
        "deltas",
        "workers",
        "turns/s",
        "server CPU ms/turn",
        "turns per server CPU s",
        "delta events/turn",
        "mock ms/turn",
        "load ms/turn",
        "PG ms/turn",
        "cores busy",
        "load avg at starts",
        "busiest worker's CPU share",
        "errors",
        "x2/x1 turns/s",
        "x2/x1 turns per server CPU s",
        "bound",
    ]
    return "\n".join(
        [
            machine(),
            "",
            f"{len(os.sched_getaffinity(0))} cores; each figure summed over every round. "
            "bound: 2 / (1 + CPU of mock, load generator and PostgreSQL / the servers' CPU), "
            "the most x2/x1 this machine can show with that CPU beside the servers.",
            "",
            table(head, rows, left=1),
        ]
    )


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
    parser.add_argument(
        "--stock-mock",
        dest="mock",
        action="store_const",
        const=ROOT / "tests" / "openai_mock.py",
        default=ROOT / "bench" / "lean_mock.py",
        help="the test mock on Hypercorn rather than bench/lean_mock.py",
    )
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
