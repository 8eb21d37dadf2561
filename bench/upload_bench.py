"""Uploads under load: N clients each upload one file at once; throughput and server RSS.

    python bench/upload_bench.py [--clients 20] [--megabytes 20] [--strategy direct|two_phase]
        [--db-url sqlite|postgresql://...]

Starts `python -m tripchat.cli serve` (own process group, 127.0.0.1, its own SQLite file
unless --db-url names a PostgreSQL database, whose tables are then dropped first), waits
for /healthz, and measures its resident memory at rest. Then N clients, each its own
`X-User-Id`, upload a plain-text file of M MB at the same moment over HTTP/1.1, streamed
from a generator (the client holds 1 MB at a time): direct uploads POST to /chatkit/files;
two-phase ones call `attachments.create` first and POST to the signed URL. It prints the
aggregate throughput (MB/s), the slowest upload, and the server's peak RSS (VmHWM) against
its RSS at rest: an upload buffered whole would add N x M MB; streamed chunks add a
bounded amount whatever M is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import empty_postgres  # noqa: E402
from servers import ServerProcess  # noqa: E402

BOUNDARY = "benchb0undary"
PIECE = 1024 * 1024


def status_kb(pid: int, field: str) -> int:
    """A VmRSS / VmHWM figure of the process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for {pid}")


async def form(size: int) -> AsyncIterator[bytes]:
    """A multipart body with one `file` field of `size` bytes of text, 1 MB at a time."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    line = b"Lisbon, Porto, Faro and the Douro valley in May.\n"
    piece = (line * (PIECE // len(line) + 1))[:PIECE]
    sent = 0
    while sent < size:
        chunk = piece[: min(PIECE, size - sent)]
        sent += len(chunk)
        yield chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def upload(http: httpx.AsyncClient, url: str, user: str, size: int, strategy: str) -> float:
    """One user's upload; its duration in seconds."""
    headers = {"X-User-Id": user}
    target = f"{url}/chatkit/files"
    if strategy == "two_phase":
        body = {
            "type": "attachments.create",
            "params": {"name": "big.txt", "size": size, "mime_type": "text/plain"},
        }
        created = await http.post(f"{url}/chatkit", content=json.dumps(body), headers=headers)
        created.raise_for_status()
        target = created.json()["upload_descriptor"]["url"]
        headers = {}
    start = time.perf_counter()
    response = await http.post(
        target,
        content=form(size),
        headers={**headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    if response.status_code != 200:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:200]}")
    return time.perf_counter() - start


async def run(args: argparse.Namespace) -> None:
    size = args.megabytes * 1024 * 1024
    workdir = Path(tempfile.mkdtemp(prefix="tripchat-upload-bench-"))
    db_url = f"sqlite:///{workdir / 'bench.db'}" if args.db_url == "sqlite" else args.db_url
    if not db_url.startswith("sqlite:"):
        await empty_postgres(db_url)
    env = {
        "CHATKIT_DB_URL": db_url,
        "OPENAI_API_KEY": "unused",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "CHATKIT_TRACING": "false",
        "CHATKIT_MAX_UPLOAD_BYTES": str(size + PIECE),
    }
    with ServerProcess(env, workdir=workdir, name="upload-bench") as server:
        await asyncio.sleep(2.0)  # let start-up work (the travel data) finish
        rest_kb = status_kb(server.pid, "VmRSS")
        limits = httpx.Limits(max_connections=args.clients + 5)
        timeout = httpx.Timeout(300.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as http:
            start = time.perf_counter()
            durations = await asyncio.gather(
                *(
                    upload(http, server.url, f"user-{n}", size, args.strategy)
                    for n in range(args.clients)
                )
            )
            elapsed = time.perf_counter() - start
        peak_kb = status_kb(server.pid, "VmHWM")
    total_mb = args.clients * args.megabytes
    backend = "sqlite" if db_url.startswith("sqlite:") else "postgres"
    print(f"{args.clients} clients x {args.megabytes} MB, {args.strategy}, {backend}")
    print(f"throughput      {total_mb / elapsed:8.1f} MB/s  ({total_mb} MB in {elapsed:.1f} s)")
    print(f"slowest upload  {max(durations):8.1f} s")
    print(f"server RSS      {rest_kb / 1024:8.1f} MB at rest, peak {peak_kb / 1024:.1f} MB")
    growth = (peak_kb - rest_kb) / 1024
    print(
        f"peak - rest     {growth:8.1f} MB  ({growth / total_mb:.3f} x the bytes uploaded; "
        "whole-file buffering would be >= 1)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--strategy", choices=["direct", "two_phase"], default="direct")
    parser.add_argument("--db-url", default="sqlite")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
