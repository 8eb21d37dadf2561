"""Where a server's CPU goes, from a py-spy `--format raw` (collapsed stacks) recording.

Each sample is charged to its *owner*: the innermost frame that belongs to a component
we care about (tripchat, the ChatKit SDK, the Agents SDK, the openai client, httpx,
the HTTP server, Starlette/FastAPI, the database driver). Helpers with no interest of
their own (pydantic, json, asyncio, anyio, h11, logging, the stdlib) are charged to the
component that called them, so "openai client 30%" includes the pydantic work it asks
for. Also listed: the top functions by self time and by cumulative (inclusive) time,
and how much of all samples run inside pydantic, json or logging wherever they are.

    python bench/profile_stacks.py bench/profiles/tripchat.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OWNERS = {
    "tripchat": "tripchat (ours)",
    "bench": "bench app (ours)",
    "chatkit": "chatkit SDK",
    "agents": "agents SDK",
    "openai": "openai client",
    "httpx": "httpx/httpcore (model HTTP)",
    "httpcore": "httpx/httpcore (model HTTP)",
    "httpx2": "httpx/httpcore (model HTTP)",
    "hypercorn": "HTTP server (hypercorn/uvicorn)",
    "uvicorn": "HTTP server (hypercorn/uvicorn)",
    "starlette": "Starlette/FastAPI",
    "fastapi": "Starlette/FastAPI",
    "aiosqlite": "database driver",
    "sqlite3": "database driver",
    "asyncpg": "database driver",
    "gc": "cyclic garbage collector",
}
NO_OWNER = "event loop / other"
# asyncio frames that run every callback: everything below them is under every sample.
LOOP_FUNCS = ("._run_once", "Handle._run", ".run_forever")
ANYWHERE = ("pydantic", "json", "logging", "copy", "h11", "asyncio", "gc")
# CPython's collector, visible in `py-spy --native` stacks.
GC_FUNCS = ("gc_collect_main", "gc_collect_with_callback", "gc_collect_generations")
GC_FRAME_TEXT = "<garbage collection> (gc)"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    """One stack frame: function name and the top-level package of its file."""

    func: str
    file: str
    package: str

    @property
    def label(self) -> str:
        return f"{self.func} ({self.file})"


def package_of(path: str) -> str:
    """`chatkit` for .../site-packages/chatkit/server.py, `json` for json/encoder.py."""
    for marker in ("site-packages/", "/work/main/", f"{ROOT}/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if path.startswith("<"):
        return "<frozen>"
    head = path.lstrip("/").split("/", 1)[0]
    return head.removesuffix(".py").lstrip("_") or "?"


def parse_frame(text: str) -> Frame:
    """A py-spy frame `func (path:line)` without its line number."""
    match = _FRAME.match(text)
    if match is None:
        return Frame(text, "?", "?")
    path = match["file"]
    short = path.split("site-packages/", 1)[-1].split("/work/main/", 1)[-1]
    return Frame(match["func"], short, package_of(path))


def read_samples(path: Path) -> list[tuple[list[Frame], int]]:
    """Stacks (root first) with their sample counts, Python frames only.

    A `--native` recording's C frames are dropped, except that a stack inside CPython's
    cyclic garbage collector ends in a `<garbage collection>` frame: the collection runs
    whenever an allocation crosses a threshold, so without it the time is blamed on
    whichever Python line happened to allocate."""
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [parse_frame(part) for part in stack.split(";")]
        python = [f for f in frames if f.file.endswith(".py") or f.file.startswith("<")]
        if any(f.func in GC_FUNCS for f in frames):
            python.append(parse_frame(GC_FRAME_TEXT))
        samples.append((python, int(count)))
    return samples


def above_loop(stack: list[Frame]) -> list[Frame]:
    """The frames the event loop is running: what lies below it is under every sample."""
    cut = 0
    for index, frame in enumerate(stack):
        if frame.package == "asyncio" and frame.func.endswith(LOOP_FUNCS):
            cut = index + 1
    return stack[cut:]


def owner(stack: list[Frame]) -> str:
    for frame in reversed(stack):
        if frame.package in OWNERS:
            return OWNERS[frame.package]
    return NO_OWNER


def owner_counts(paths: Iterable[Path]) -> Counter[str]:
    """Samples per owner over one or more recordings."""
    owners: Counter[str] = Counter()
    for path in paths:
        for stack, count in read_samples(path):
            owners[owner(above_loop(stack))] += count
    return owners


def _rows(counter: Counter[str], total: int, top: int) -> Iterable[str]:
    for label, count in counter.most_common(top):
        yield f"| {100 * count / total:5.1f}% | `{label}` |"


def summarise(path: Path, top: int = 25) -> str:
    """A markdown summary of one recording."""
    samples = read_samples(path)
    total = sum(count for _, count in samples) or 1
    owners: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for full, count in samples:
        self_time[full[-1].label] += count
        stack = above_loop(full)
        owners[owner(stack)] += count
        for label in {frame.label for frame in stack}:
            inclusive[label] += count
        packages = {frame.package for frame in stack}
        for name in ANYWHERE:
            if name in packages or (name == "pydantic" and "pydantic_core" in packages):
                anywhere[name] += count
    lines = [
        f"Samples: {total} ({path.name})",
        "",
        "| share | owner (helpers charged to caller) |",
        "|---:|---|",
        *_rows(owners, total, len(owners)),
        "",
        "| share | inside, wherever called from |",
        "|---:|---|",
        *_rows(anywhere, total, len(anywhere)),
        "",
        f"| self | top {top} functions by self time |",
        "|---:|---|",
        *_rows(self_time, total, top),
        "",
        f"| incl. | top {top} functions by cumulative time |",
        "|---:|---|",
        *_rows(inclusive, total, top),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recording", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summarise(args.recording, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
