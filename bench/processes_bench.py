"""Turns/s with one serving process against two: `tripchat serve --workers 1` vs `--workers 2`.

    python bench/processes_bench.py [--backends sqlite,postgres] [--pg-url postgresql://...]
        [--deltas 20,400] [--conversations 80,32] [--turns 3] [--seconds 8] [--warm 2]
        [--rounds 6] [--profile DIR] [--batch-others]

First it measures the machine: a pure-CPU loop in one process, then in two at once (how
much a second busy vCPU slows the first), and the same for a loop that reads memory at
random (how much two processes sharing the caches slow each other). The OpenAI mock
(bench/lean_mock.py) runs as its own process, each server as its own process group on
127.0.0.1. For each backend and reply length (`--deltas`) a one-worker and a two-worker
server start and stay up; then `--rounds` times, one after the other (1-then-2, then
2-then-1), `--conversations` clients talk to one of them, each conversation of `--turns`
turns (threads.create, then add_user_message) a new user (`X-User-Id`) on a new
connection: `--warm` s of load, then a measured `--seconds` window in which every client
is busy. Each round gives one x2/x1 from two windows a few seconds apart, so the shared
host's drift (its speed moves by a quarter from minute to minute) falls on few ratios
rather than on the one total; the median and the range of those ratios are printed
beside the totals. Printed per backend and reply length: turns/s, server CPU per turn
(every process of the group) and its wake-ups, the mock's, this load generator's and
PostgreSQL's CPU per turn, the busiest worker's share, and the ratio of two processes'
turns/s to one's, with the bound the CPU beside the servers puts on it. With `--profile
DIR`, py-spy samples every worker during each window and a second table gives each
component's server CPU per turn with one worker and with two. `--batch-others` runs the
mock, the load generator and PostgreSQL under SCHED_BATCH, so their wake-ups do not
preempt the servers: what is left of a difference then is not their interference.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _loadgen import Tally, converse, keep_conversing  # noqa: E402
from _procs import ProcessGroup, cpu_seconds, postgres_cluster, raise_fd_limit, schedstat  # noqa: E402
from _servers import openai_mock  # noqa: E402
from _tables import fmt, machine, ratio, table  # noqa: E402
from conftest import empty_postgres  # noqa: E402
from profile_stacks import owner_counts  # noqa: E402
from servers import HOST, ServerProcess, free_port  # noqa: E402

TURN_SECONDS = 120.0
SPY_RATE = 100
START_SECONDS = 120.0
SPIN = """
import random, sys, time
n, size = int(sys.argv[1]), int(sys.argv[2])
table = {i: [i] for i in range(size)}
keys = list(range(size))
random.shuffle(keys)
sys.stdin.readline()
t, c = time.perf_counter(), time.process_time()
x = 0
if size:
    for i in range(n):
        x += table[keys[i % size]][0]
else:
    for i in range(n):
        x += i * i
print(n / (time.perf_counter() - t), n / (time.process_time() - c), flush=True)
"""
"""A loop that starts on a line from stdin and prints its loops per second of wall time
and per second of its own CPU time: pure CPU with a size of 0, else reads of a dict of
`size` entries in random order (as a server's heap is walked: most reads miss the caches)."""
CACHE_BOUND = 2_000_000
"""Entries of the cache-bound loop's dict: about 250 MB, far more than any cache."""


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
    server_runs: int = 0
    mock_cpu: float = 0.0
    client_cpu: float = 0.0
    db_cpu: float = 0.0
    loads: tuple[float, ...] = ()
    busiest: tuple[float, ...] = ()
    """Per run, the busiest worker's share of the workers' CPU (0.5 is an even split)."""

    def add(self, other: Run) -> None:
        for name in (
            "turns",
            "server_runs",
            "errors",
            "delta_events",
            "seconds",
            "loads",
            "busiest",
        ):
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


def spin(copies: int, loops: int, size: int = 0) -> list[tuple[float, float]]:
    """Loops per wall second and per CPU second of `copies` SPIN processes started
    together."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SPIN, str(loops), str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(copies)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    rates = [proc.communicate()[0].split() for proc in procs]
    return [(float(wall), float(cpu)) for wall, cpu in rates]


def machine_ceiling(loops: int = 5_000_000) -> str:
    """How much two CPU-bound processes at once do, against one alone, per wall second
    (the most two serving processes can show on this machine, whatever the bench's own
    load) and per CPU second (what a second busy vCPU of a shared host costs the first);
    then the same per CPU second for a cache-bound loop, closer to a server walking its
    heap. Interleaved, three times each; the best wall rate of each is the one a
    neighbour's load disturbed least."""
    one, two, cpu = pair_rates(loops, 0)
    _, _, cache_cpu = pair_rates(loops // 2, CACHE_BOUND)
    return (
        f"machine: two CPU-bound processes do {two / one:.2f}x one "
        f"({cpu:.2f}x per CPU second; a pure-Python loop at best: "
        f"{one / 1e6:.2f} M/s alone, {two / 2e6:.2f} M/s each when two run); "
        f"two cache-bound ones {cache_cpu:.2f}x per CPU second "
        f"(random reads of a {CACHE_BOUND:,}-entry dict); "
        f"load avg {os.getloadavg()[0]:.2f}"
    )


def pair_rates(loops: int, size: int) -> tuple[float, float, float]:
    """The best wall rate of one SPIN alone and of two together (summed), and two's
    mean rate per CPU second against one's."""
    alone: list[tuple[float, float]] = []
    pairs: list[list[tuple[float, float]]] = []
    for copies in (1, 2, 2, 1, 1, 2):
        rates = spin(copies, loops, size)
        if copies == 1:
            alone.extend(rates)
        else:
            pairs.append(rates)
    one = max(wall for wall, _ in alone)
    two = max(sum(wall for wall, _ in pair) for pair in pairs)
    cpu_one = sum(cpu for _, cpu in alone) / len(alone)
    cpu_two = sum(cpu for pair in pairs for _, cpu in pair) / (2 * len(pairs))
    return one, two, cpu_two / cpu_one


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Snapshot:
    """CPU seconds so far of everything a run measures."""

    server: float
    runs: int
    """Times the servers' threads were put on a CPU."""
    workers: list[float]
    own: float
    others: dict[str, dict[int, float]]
    """Per process of the mock and PostgreSQL: a backend that ends in the window must not
    take the CPU it had before the window out of the sum."""

    def since(self, earlier: Snapshot, name: str) -> float:
        """CPU seconds `name`'s processes used since `earlier` (0 when not measured); a
        process that ended in the window counts for nothing, one that began for all."""
        now, then = self.others.get(name, {}), earlier.others.get(name, {})
        return sum(cpu - then.get(pid, 0.0) for pid, cpu in now.items())

    @classmethod
    def take(
        cls, group: ProcessGroup, workers: list[int], others: dict[str, ProcessGroup]
    ) -> Snapshot:
        return cls(
            group.cpu_seconds(),
            sum(schedstat(pid)[1] for pid in group.pids()),
            [cpu_seconds(pid) for pid in workers],
            own_cpu(),
            {name: {pid: cpu_seconds(pid) for pid in g.pids()} for name, g in others.items()},
        )


async def load(
    server: ServerProcess,
    others: dict[str, ProcessGroup],
    run: Run,
    clients: int,
    args: argparse.Namespace,
    profile: Path | None = None,
) -> None:
    """`clients` conversations at a time for `--warm` + `--seconds` s; the figures are
    the `--seconds` window's (steady state: every client busy from its start to its end).
    With `profile`, py-spy samples each worker over the window into `profile`-PID.txt."""
    group = ProcessGroup(server.pid)
    await group.settle()
    with batched(others) if args.batch_others else nullcontext():
        await window(server, group, others, run, clients, args, profile)


async def window(
    server: ServerProcess,
    group: ProcessGroup,
    others: dict[str, ProcessGroup],
    run: Run,
    clients: int,
    args: argparse.Namespace,
    profile: Path | None,
) -> None:
    """A warm-up conversation, then `load`'s window."""
    host, port = HOST, server.port
    tally = Tally()
    await converse(host, port, "bench-warm-up", run.deltas, 1, Tally(), math.inf)  # not counted
    run.loads = (os.getloadavg()[0],)
    workers = [pid for pid in group.pids() if pid != server.pid or run.workers == 1]
    now = time.perf_counter()
    start, end = now + args.warm, now + args.warm + args.seconds
    talking = asyncio.gather(
        *(keep_conversing(host, port, run.deltas, args.turns, tally, end) for _ in range(clients))
    )
    await asyncio.sleep(start - time.perf_counter())
    spies = (
        [spy(pid, args.seconds, Path(f"{profile}-{pid}.txt")) for pid in workers] if profile else []
    )
    before = Snapshot.take(group, workers, others)
    await asyncio.sleep(end - time.perf_counter())
    after = Snapshot.take(group, workers, others)
    await asyncio.wait_for(talking, TURN_SECONDS * args.turns)  # every turn checked
    for proc in spies:
        if await asyncio.to_thread(proc.wait, TURN_SECONDS) != 0:
            raise RuntimeError(f"py-spy exited {proc.returncode}: {proc.args!r}")
    run.seconds = args.seconds
    run.turns = tally.turns_between(start, end)
    run.server_cpu = after.server - before.server
    run.server_runs = after.runs - before.runs
    each = [b - a for a, b in zip(before.workers, after.workers, strict=True)]
    run.busiest = (max(each) / sum(each),)
    run.client_cpu = after.own - before.own
    run.mock_cpu = after.since(before, "mock")
    run.db_cpu = after.since(before, "db")
    run.errors = tally.failed
    run.delta_events = round(tally.delta_events * run.turns / max(1, len(tally.ended)))


@contextmanager
def batched(others: dict[str, ProcessGroup]) -> Iterator[None]:
    """The load generator (this thread), the mock and PostgreSQL under SCHED_BATCH: they
    still get their CPU, but a wake-up of theirs no longer preempts a server, as when they
    run on machines or cores of their own. Every task found at the end (PostgreSQL's new
    backends inherit the postmaster's policy) goes back to SCHED_OTHER."""
    set_policy(others, os.SCHED_BATCH)
    try:
        yield
    finally:
        set_policy(others, os.SCHED_OTHER)  # servers started later inherit this thread's


def set_policy(others: dict[str, ProcessGroup], policy: int) -> None:
    """`policy` for this thread and every thread of `others`' processes."""
    param = os.sched_param(0)
    for group in others.values():
        for pid in group.pids():
            with suppress(OSError):  # a process or thread that ended meanwhile
                for task in Path(f"/proc/{pid}/task").iterdir():
                    os.sched_setscheduler(int(task.name), policy, param)
    os.sched_setscheduler(0, policy, param)


def spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling one worker's threads for `seconds` without pausing it (raw stacks:
    bench/profile_stacks.py reads them)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    argv = [str(py_spy), "record", "--pid", str(pid), "--rate", str(SPY_RATE), "--nonblocking"]
    argv += ["--duration", str(math.ceil(seconds)), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


Key = tuple[str, int]
"""A backend and a reply length."""


@dataclass
class Results:
    totals: dict[tuple[str, int, int], Run] = field(default_factory=dict)
    """Per backend, reply length and workers, every round's window summed."""
    ratios: dict[Key, list[float]] = field(default_factory=dict)
    """Per backend and reply length, each round's x2/x1 turns/s."""
    profiles: dict[tuple[str, int, int], list[tuple[Path, Run]]] = field(default_factory=dict)
    """Per backend, reply length and workers, each window's recordings and figures."""


async def bench(args: argparse.Namespace) -> Results:
    results = Results()
    workdir = Path(tempfile.mkdtemp(prefix="processes-bench-"))
    cluster = await postgres_cluster(args.pg_url) if args.pg_url else None
    with openai_mock(20, 0.0, workdir, args.mock) as (base_url, mock):
        for backend in args.backends:
            others: dict[str, ProcessGroup] = {"mock": mock}
            if backend == "postgres" and cluster is not None:
                others["db"] = cluster
            for deltas in args.deltas:
                if backend == "postgres":
                    await empty_postgres(args.pg_url)  # both servers on it, loaded in turn
                env = {
                    "OPENAI_BASE_URL": base_url,
                    "OPENAI_API_KEY": "bench",
                    "CHATKIT_TRACING": "false",
                }
                envs = [
                    env | {"CHATKIT_DB_URL": args.pg_url}
                    if backend == "postgres"
                    else env | {"CHATKIT_DB_URL": f"sqlite:///{workdir}/{deltas}-{workers}.db"}
                    for workers in (1, 2)
                ]
                with server(envs[0], 1, workdir) as one, server(envs[1], 2, workdir) as two:
                    for rnd in range(args.rounds):
                        await one_round(results, (one, two), others, (backend, deltas), rnd, args)
    return results


async def one_round(
    results: Results,
    servers: tuple[ServerProcess, ServerProcess],
    others: dict[str, ProcessGroup],
    config: Key,
    rnd: int,
    args: argparse.Namespace,
) -> None:
    """One window on each server, in the order the round's number gives; their x2/x1."""
    backend, deltas = config
    window: dict[int, Run] = {}
    for workers in (1, 2) if rnd % 2 == 0 else (2, 1):
        key = (backend, deltas, workers)
        run = window[workers] = Run(*key)
        profile = args.profile / f"{backend}-{deltas}-w{workers}-r{rnd}" if args.profile else None
        await load(servers[workers - 1], others, run, args.clients[deltas], args, profile)
        print(
            f"  round {rnd + 1} {backend} {deltas} deltas, {workers} worker(s): "
            f"{run.turns_per_second:.1f} turns/s, "
            f"{run.per_turn_ms(run.server_cpu):.1f} server ms/turn, "
            f"load avg {run.loads[0]:.2f} at its start",
            file=sys.stderr,
            flush=True,
        )
        results.totals.setdefault(key, Run(*key)).add(run)
        if profile is not None:
            results.profiles.setdefault(key, []).append((profile, run))
    results.ratios.setdefault(config, []).append(
        window[2].turns_per_second / window[1].turns_per_second
    )


def report(results: Results, ceiling: str) -> str:
    runs = list(results.totals.values())
    by_key = results.totals
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
                fmt(r.server_runs / r.turns if r.turns else math.nan, 0),
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
                spread(results.ratios.get((r.backend, r.deltas), [])) if two else "",
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
        "server wake-ups/turn",
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
        "x2/x1 turns/s by round: median (range)",
        "bound",
    ]
    return "\n".join(
        [
            machine(),
            "",
            f"{len(os.sched_getaffinity(0))} cores; each figure summed over every round. "
            "bound: 2 / (1 + CPU of mock, load generator and PostgreSQL / the servers' CPU), "
            "the most x2/x1 this machine can show with that CPU beside the servers.",
            ceiling,
            "",
            table(head, rows, left=1),
            *([profiles(results)] if results.profiles else []),
        ]
    )


def spread(ratios: Sequence[float]) -> str:
    if not ratios:
        return ""
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def profiles(results: Results) -> str:
    """Each component's server CPU per turn with one worker and with two (py-spy's share
    of the samples times the measured CPU), and how much it rose."""
    rows = []
    for (backend, deltas, workers), windows in results.profiles.items():
        if workers != 1 or (backend, deltas, 2) not in results.profiles:
            continue
        ms = [owner_ms(windows), owner_ms(results.profiles[(backend, deltas, 2)])]
        for name in sorted(ms[0].keys() | ms[1].keys(), key=lambda n: -ms[0].get(n, 0.0)):
            one, two = ms[0].get(name, 0.0), ms[1].get(name, 0.0)
            rows.append([backend, deltas, name, fmt(one, 2), fmt(two, 2), ratio(two, one)])
    head = ["backend", "deltas", "component", "1 worker ms/turn", "2 workers ms/turn", "x2/x1"]
    return "\n".join(
        [
            "",
            f"Server CPU per turn by component (py-spy at {SPY_RATE} Hz on every worker, "
            "every round; helpers charged to their caller as in bench/profile_stacks.py):",
            "",
            table(head, rows, left=3),
        ]
    )


def owner_ms(windows: Sequence[tuple[Path, Run]]) -> dict[str, float]:
    """Milliseconds of server CPU per turn by component over the windows."""
    cpu: dict[str, float] = {}
    turns = 0
    for prefix, run in windows:
        counts = owner_counts(prefix.parent.glob(f"{prefix.name}-*.txt"))
        total = sum(counts.values()) or 1
        for name, count in counts.items():
            cpu[name] = cpu.get(name, 0.0) + run.server_cpu * count / total
        turns += run.turns
    return {name: 1000 * seconds / turns for name, seconds in cpu.items()} if turns else {}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("TRIPCHAT_TEST_POSTGRES_URL", ""))
    parser.add_argument("--deltas", default="20,400")
    parser.add_argument(
        "--conversations",
        default="80,32",
        help="conversations at a time, per --deltas value (the last one for the rest)",
    )
    parser.add_argument("--turns", type=int, default=3, help="turns per conversation")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured, per window")
    parser.add_argument("--warm", type=float, default=2.0, help="load before measuring, s")
    parser.add_argument("--rounds", type=int, default=6, help="pairs of windows, 1 and 2 workers")
    parser.add_argument(
        "--profile", type=Path, help="py-spy every worker, raw stacks into this (fresh) dir"
    )
    parser.add_argument(
        "--batch-others",
        action="store_true",
        help="the mock, load generator and PostgreSQL under SCHED_BATCH (no wake-up preemption)",
    )
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
    counts = [int(c) for c in args.conversations.split(",") if c]
    args.clients = {d: counts[min(i, len(counts) - 1)] for i, d in enumerate(args.deltas)}
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if "postgres" in args.backends and not args.pg_url:
        parser.error("postgres needs --pg-url (its tripchat tables are dropped)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    started = time.perf_counter()
    ceiling = machine_ceiling()
    print(ceiling, file=sys.stderr, flush=True)
    results = asyncio.run(bench(args))
    print(report(results, ceiling))
    print(f"\n{time.perf_counter() - started:.0f} s; python {sys.version.split()[0]}")
    return 0 if all(r.errors == 0 for r in results.totals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
