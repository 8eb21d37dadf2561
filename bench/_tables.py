"""Printing a bench's figures: markdown tables, percentiles, ratios and the machine.

`table` renders rows under a header; `ratio` and `fmt` print NaN and zero as "-", so a
figure a run did not measure reads as missing, not as 0.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path

PACKAGES = (
    "openai-chatkit",
    "openai-agents",
    "openai",
    "pydantic",
    "hypercorn",
    "h11",
    "uvicorn",
    "fastapi",
    "starlette",
    "httpx",
    "httpcore",
    "aiosqlite",
    "asyncpg",
    "py-spy",
)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def fmt(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return (
        f"{len(os.sched_getaffinity(0))} CPUs ({os.cpu_count()} online), {model}, "
        f"{mem_kb / 1024 / 1024:.1f} GiB RAM, Linux {platform.release()}, "
        f"load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"Python {platform.python_version()}; " + ", ".join(versions)
    )


def table(head: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A markdown table: the first `left` columns left-aligned, the rest right-aligned."""
    rule = ["---"] * left + ["---:"] * (len(head) - left)
    return "\n".join(
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in [head, rule, *rows]
    )
