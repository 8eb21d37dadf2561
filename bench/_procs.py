"""A process tree's CPU and memory, read from /proc: what every bench measures a server by.

`ProcessGroup` covers every process of one or more process groups (a server and what it
forks); `Cluster` a local PostgreSQL cluster, whose backends are session leaders of their own.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import asyncpg

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """Every live process as (pid, the fields of /proc/PID/stat after its name)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        yield int(entry.name), fields


def schedstat(pid: int) -> tuple[float, int]:
    """CPU seconds (to the nanosecond) and times put on a CPU (wake-ups and preemptions)
    of one process's live threads."""
    total, runs = 0, 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            fields = task.read_text().split()
            total, runs = total + int(fields[0]), runs + int(fields[2])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total / 1e9, runs


def cpu_seconds(pid: int) -> float:
    """CPU time of one process's live threads, to the nanosecond (schedstat)."""
    return schedstat(pid)[0]


class ProcessGroup:
    """Every process of one or more process groups (a server and any children it forks;
    several for a multi-process server: CPU and RSS are then summed over all of them)."""

    def __init__(self, *pgids: int) -> None:
        self.pgid = pgids[0]
        self.pgids = frozenset(pgids)

    def pids(self) -> list[int]:
        return [pid for pid, fields in proc_stats() if int(fields[2]) in self.pgids]

    def cpu_seconds(self) -> float:
        """CPU time of the group's live threads, to the nanosecond (schedstat)."""
        return sum(cpu_seconds(pid) for pid in self.pids())

    def cpu_ticks_seconds(self) -> float:
        """utime+stime of the group (includes threads that have exited), 1/CLK_TCK steps."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICKS

    async def settle(self, window: float = 0.5, busy: float = 0.03, limit: float = 60.0) -> float:
        """Wait (at most `limit` s) until the group uses under `busy` of a core over `window`
        s: start-up work (tripchat warms its travel data in a thread) must not be measured.
        Returns the seconds waited."""
        started = time.perf_counter()
        last = self.cpu_seconds()
        while time.perf_counter() - started < limit:
            await asyncio.sleep(window)
            now = self.cpu_seconds()
            if now - last < busy * window:
                break
            last = now
        return time.perf_counter() - started

    def _status_kb(self, key: str) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
        return total

    def rss_kb(self) -> int:
        return self._status_kb("VmRSS")

    def reset_peak(self) -> None:
        """Start a new peak-RSS window (writes 5 to clear_refs; needs owning the process)."""
        for pid in self.pids():
            with suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_kb(self) -> int:
        return self._status_kb("VmHWM")


class Cluster(ProcessGroup):
    """A local PostgreSQL cluster: the postmaster and its children (each of which is a
    session leader of its own, so a process group does not cover them)."""

    def __init__(self, postmaster: int) -> None:
        super().__init__(postmaster)

    def pids(self) -> list[int]:
        return [self.pgid] + [pid for pid, fields in proc_stats() if int(fields[1]) == self.pgid]


async def postgres_cluster(url: str) -> Cluster | None:
    """The cluster's processes, found from a live backend's parent; None when the backend
    is not in this machine's /proc (a remote cluster)."""
    conn = await asyncpg.connect(url)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
    finally:
        await conn.close()
    return Cluster(int(fields[1]))


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
