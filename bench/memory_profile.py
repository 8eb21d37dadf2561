"""Where a held stream's memory goes, inside a real `tripchat serve` (SQLite, the mock).

    python bench/memory_profile.py [--streams 300] [--frames 8] [--env K=V ...]

The server runs this file first (`--child`). At each SIGUSR1 it collects garbage and dumps
the allocators (VmRSS, pymalloc arenas, glibc mallinfo2), the collector's objects by type
and, with `--frames` (0: off, for clean pymalloc figures), a tracemalloc snapshot: after a
warm-up, holding `--streams` one-delta replies, and after every client left.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _procs import ProcessGroup, raise_fd_limit  # noqa: E402
from _servers import openai_mock  # noqa: E402
from _tables import table  # noqa: E402
from chat_bench import TurnResult, clients, create_thread, run_turn  # noqa: E402
from profile_stacks import package_of  # noqa: E402
from servers import ServerProcess, app_env  # noqa: E402

CHILD, HOST, WAVE, WAVE_SECONDS = "--child", "127.0.0.1", 20, 3.0
SECONDS, TOP = 300.0, 25  # to start, to open a stream, to dump; rows per table
GENERIC = ("pydantic", "pydantic_core", "typing_extensions")
# Held replies outlast the model read time-out; a slow dump must not expire their leases.
SERVER_ENV = {"CHATKIT_MODEL_TIMEOUT": "3600", "CHATKIT_LEASE_SECONDS": "3600"}


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def allocators() -> dict[str, float]:
    """The process's memory by allocator, in bytes (glibc; pymalloc from its debug stats)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    with tempfile.TemporaryFile() as out:  # pymalloc writes its figures to fd 2
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        sys._debugmallocstats()  # prints nothing while tracemalloc runs
        os.dup2(saved, 2), os.close(saved), out.seek(0)
        lines = [line.split("=") for line in out.read().decode().splitlines() if "=" in line]
    stats = {key.strip(): value.strip().replace(",", "") for key, value, *_ in lines}
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        "rss": int(status["VmRSS"].split()[0]) * 1024.0,
        "traced": float(tracemalloc.get_traced_memory()[0]),
        "pymalloc arenas": float(stats.get("# arenas allocated current", "nan")) * 2**20,
        "pymalloc used": float(stats.get("# bytes in allocated blocks", "nan")),
        "glibc in use": float(info.uordblks + info.hblkhd),
        "glibc held": float(info.arena + info.hblkhd),
    }


def child(argv: list[str]) -> int:
    """Serve as `tripchat` would, dumping a snapshot at each SIGUSR1."""
    frames, out, dumps = int(os.environ["MEMPROF_FRAMES"]), Path(os.environ["MEMPROF_DIR"]), [0]

    def dump(signum: int, frame: object) -> None:
        if frames and not tracemalloc.is_tracing():
            tracemalloc.start(frames)  # after start-up: tracing the imports takes minutes
        gc.collect()
        name, dumps[0] = out / f"snap{dumps[0]}", dumps[0] + 1
        if frames:
            tracemalloc.take_snapshot().dump(str(name) + ".tracemalloc")
        types, sizes = Counter[str](), Counter[str]()
        for obj in gc.get_objects():
            key = f"{type(obj).__module__}.{type(obj).__qualname__}"
            types[key] += 1
            sizes[key] += sys.getsizeof(obj)
        name.with_suffix(".json").write_text(
            json.dumps({"allocators": allocators(), "types": types, "sizes": sizes})
        )

    signal.signal(signal.SIGUSR1, dump)
    from tripchat.cli import main

    return main(argv)


def asker(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame outside the standard library and pydantic: who asked for it."""
    frames = list(traceback)  # oldest first
    for frame in reversed(frames):
        name = frame.filename
        if not name.startswith((sys.base_prefix, "<")) and package_of(name) not in GENERIC:
            break
    else:
        frame = frames[-1]
    return f"{package_of(frame.filename)} {Path(frame.filename).name}"


def rows(head: str, diff: Counter[str], streams: int, counts: Counter[str] | None = None) -> str:
    """The TOP entries of a (holding - before) difference per held stream, and the total."""
    total, per = sum(diff.values()), (lambda n: f" x{n / streams:.1f}" if counts else "")
    body = [
        [f"`{name}`{per(counts and counts[name])}", f"{size / streams:,.0f}", f"{size / total:.1%}"]
        for name, size in diff.most_common(TOP)
    ]
    return "\n" + table(
        [head, "bytes/stream", "share"], [*body, ["**total**", f"{total / streams:,.0f}", ""]]
    )


def report(out: Path, streams: int) -> None:
    figures = [json.loads((out / f"snap{n}.json").read_text()) for n in range(3)]
    print("| per held stream, bytes | holding - before | after - before |\n|---|---:|---:|")
    for key, base in figures[0]["allocators"].items():
        hold, after = (figures[n]["allocators"][key] - base for n in (1, 2))
        print(f"| {key} | {hold / streams:,.0f} | {after / streams:,.0f} |")
    types, sizes = (Counter(figures[1][k]) - Counter(figures[0][k]) for k in ("types", "sizes"))
    print(rows("objects by type (x objects per stream; shallow)", sizes, streams, types))
    if not (out / "snap0.tracemalloc").exists():
        return
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, holding = (
        tracemalloc.Snapshot.load(str(out / f"snap{n}.tracemalloc")).filter_traces(ignore)
        for n in (0, 1)
    )
    for key, name in (("package", lambda tb: package_of(tb[-1].filename)), ("asker", asker)):
        diff: Counter[str] = Counter()
        for sign, snapshot in ((1, holding), (-1, before)):
            for trace in snapshot.traces:
                diff[name(trace.traceback)] += sign * trace.size
        print(rows(f"traced, by {key}", diff, streams))
    for stat in holding.compare_to(before, "traceback")[: TOP // 2]:  # the innermost frame last
        print(
            f"\n{stat.size_diff / streams:,.0f} B/stream:\n" + "\n".join(stat.traceback.format(6))
        )


async def measure(args: argparse.Namespace) -> None:
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="memprof-"))
    extra = {**SERVER_ENV, **dict(item.split("=", 1) for item in args.env)}
    with openai_mock(20, 0.0, work) as (base_url, _mock):
        env = app_env(base_url, work / "t.db", MEMPROF_FRAMES=str(args.frames),
                      MEMPROF_DIR=str(work), **extra)  # fmt: skip
        argv = [sys.executable, __file__, CHILD, "serve", "--host", HOST, "--port", "{port}"]
        server = ServerProcess(env, argv, workdir=work, name="tripchat").start()
        try:
            server.wait_ready(SECONDS)
            group, url = ProcessGroup(server.pid), f"{server.url}/chatkit"

            async def snap(n: int) -> None:
                await group.settle()
                os.kill(server.pid, signal.SIGUSR1)
                with anyio.fail_after(SECONDS):
                    while not (work / f"snap{n}.json").exists():
                        await asyncio.sleep(0.2)

            pool, opened = clients(args.streams, 600.0), asyncio.Semaphore(0)
            for i in range(20):  # warm-up: every code path once, pools filled
                await run_turn(pool[0], url, f"warm-{i}", create_thread(f"warm {i}"), None)
            await snap(0)

            async def hold(i: int, result: TurnResult) -> None:
                body = create_thread(f"hold {i} [tokens 2] [delay 900]")
                await asyncio.sleep(i // WAVE * WAVE_SECONDS)  # all at once starve
                try:
                    await run_turn(
                        pool[i % len(pool)], url, f"h{i}", body, None, opened.release, result
                    )
                finally:
                    if result.ttft is None:
                        opened.release()  # never opened: do not keep the wave waiting

            tasks = [asyncio.create_task(hold(i, TurnResult(False))) for i in range(args.streams)]
            for _ in tasks:
                await asyncio.wait_for(opened.acquire(), SECONDS)
            await snap(1)
            held = sum(not task.done() for task in tasks)  # the divisor: those still open
            _ = [task.cancel() for task in tasks]
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(client.aclose() for client in pool))
            await asyncio.sleep(5)
            await snap(2)
        finally:
            server.stop()
        report(work, held)


def main() -> None:
    if sys.argv[1:2] == [CHILD]:
        sys.exit(child(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--frames", type=int, default=8, help="tracemalloc frames; 0 = off")
    parser.add_argument("--env", action="append", default=[], help="K=V for the server")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
