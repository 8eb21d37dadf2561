"""What a deep page of a long thread costs next to the first one.

ChatKit pages a thread with `after` cursors. If a cursor made the database scan
everything before it, scrolling back through a long trip plan would slow down page
by page; with the sequence-number cursor a page deep in the thread should cost
about what the first one does. This fills one thread with many items through the
store itself, then times `load_thread_items(limit=20)` from the start, the middle
and near the far end of the thread, in both orders.

    python bench/page_cost.py [--items 100000] [--db-url sqlite:///path.db] [--reps 50]

Without --db-url it uses a throw-away SQLite file. Any URL `open_store` accepts
works; the bench thread is deleted again at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata

# Bench the checkout this script sits in, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tripchat.context import RequestContext
from tripchat.store import SQLStore, open_store

USER = RequestContext("page-cost-bench")
LIMIT = 20
CHUNK = 1000


async def fill(store: SQLStore, thread: ThreadMetadata, count: int) -> list[str]:
    """Add `count` items through the store, a chunk at a time; returns ids in order."""
    now = datetime.now(UTC)
    item_ids = [store.generate_item_id("message", thread, USER) for _ in range(count)]
    for start in range(0, count, CHUNK):
        await asyncio.gather(
            *(
                store.add_thread_item(
                    thread.id,
                    AssistantMessageItem(
                        id=item_id,
                        thread_id=thread.id,
                        created_at=now,
                        content=[AssistantMessageContent(text=f"Day {n}: sample itinerary")],
                    ),
                    USER,
                )
                for n, item_id in enumerate(item_ids[start : start + CHUNK], start)
            )
        )
    return item_ids


async def time_page(
    store: SQLStore, thread_id: str, after: str | None, order: str, reps: int
) -> list[float]:
    """Milliseconds per full page load, after one warm-up load."""
    timings: list[float] = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        page = await store.load_thread_items(thread_id, after, LIMIT, order, USER)
        timings.append((time.perf_counter() - start) * 1000)
        if len(page.data) != LIMIT:
            raise AssertionError(f"expected a full page of {LIMIT}, got {len(page.data)}")
    return timings[1:]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


async def run(db_url: str, items: int, reps: int) -> None:
    async with await open_store(db_url) as store:
        thread = ThreadMetadata(id=store.generate_thread_id(USER), created_at=datetime.now(UTC))
        await store.save_thread(thread, USER)
        try:
            start = time.perf_counter()
            item_ids = await fill(store, thread, items)
            took = time.perf_counter() - start
            print(f"filled {items:,} items in {took:.1f} s ({items / took:,.0f} items/s)\n")

            # Depth is counted from where each order starts reading.
            depths = {"first": None, "middle": items // 2, "far end": items - LIMIT - 1}
            print(f"{'order':<6} {'position':<9} {'depth':>7} {'median ms':>10} {'p95 ms':>8}")
            medians: dict[tuple[str, str], float] = {}
            for order in ("asc", "desc"):
                for position, depth in depths.items():
                    after = None
                    if depth is not None:
                        after = item_ids[depth if order == "asc" else items - 1 - depth]
                    timings = await time_page(store, thread.id, after, order, reps)
                    medians[order, position] = statistics.median(timings)
                    print(
                        f"{order:<6} {position:<9} {depth or 0:>7,} "
                        f"{medians[order, position]:>10.3f} {p95(timings):>8.3f}"
                    )
            print()
            for order in ("asc", "desc"):
                first = medians[order, "first"]
                ratios = ", ".join(
                    f"{position}/first = {medians[order, position] / first:.2f}"
                    for position in ("middle", "far end")
                )
                print(f"{order}: {ratios}")
        finally:
            await store.delete_thread(thread.id, USER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items in the thread")
    parser.add_argument("--db-url", help="any CHATKIT_DB_URL; default: a temporary SQLite file")
    parser.add_argument("--reps", type=int, default=50, help="timed loads per page")
    args = parser.parse_args()
    if args.items < 2 * LIMIT + 2:
        parser.error(f"--items must be at least {2 * LIMIT + 2} for a deep page")
    if args.db_url:
        asyncio.run(run(args.db_url, args.items, args.reps))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(f"sqlite:///{tmp}/page_cost.db", args.items, args.reps))


if __name__ == "__main__":
    main()
