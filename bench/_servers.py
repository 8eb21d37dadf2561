"""Starting what a bench talks to: the OpenAI mock, and the servers under test.

`server_specs` names the ceiling (a bare ASGI app), the chatkit-python docs' reference and
tripchat on each backend; `ServerProcess` (tests/servers.py) starts each one.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from _procs import ProcessGroup
from servers import HOST, app_env

ROOT = Path(__file__).resolve().parents[1]


TRIPCHAT_TABLES = (
    "chatkit_feedback",
    "chatkit_attachments",
    "chatkit_items",
    "chatkit_threads",
    "agent_messages",
    "agent_sessions",
    "tripchat_meta",
)


MOCK_START_SECONDS = 20.0


@contextmanager
def openai_mock(
    tokens: int, delay: float, workdir: Path, script: Path = ROOT / "tests" / "openai_mock.py"
) -> Iterator[tuple[str, ProcessGroup]]:
    """The mock in its own process group; yields its base URL. Always stopped by PID.
    `script` may be bench/lean_mock.py: the same app without Hypercorn."""
    log = (workdir / "openai-mock.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--port",
            "0",
            "--tokens",
            str(tokens),
            "--delay",
            str(delay),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + MOCK_START_SECONDS
        line = ""
        while not line.startswith("OPENAI_BASE_URL=") and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
        if not line.startswith("OPENAI_BASE_URL="):
            raise RuntimeError(f"the OpenAI mock did not start; see {log.name}")
        yield line.strip().split("=", 1)[1], ProcessGroup(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server under test."""

    name: str
    kind: str  # ceiling | reference | tripchat
    argv: tuple[str, ...]
    env: dict[str, str]
    db_url: str | None = None
    processes: int = 1
    """`serve` processes on separate ports sharing db_url; turns go round-robin over them."""

    @property
    def chatkit(self) -> bool:
        """True for servers that keep conversations (and so are read back)."""
        return self.kind != "ceiling"

    def primary(self, first_db: str | None) -> bool:
        """The reference and the first tripchat backend: held open and profiled."""
        return self.kind == "reference" or (self.kind == "tripchat" and self.db_url == first_db)


def _pg_sibling(url: str, suffix: str) -> str:
    """The same cluster's URL with the database name suffixed."""
    parts = urlsplit(url)
    return parts._replace(path=parts.path.rstrip("/") + suffix).geturl()


def server_specs(args: argparse.Namespace, base_url: str, workdir: Path) -> list[ServerSpec]:
    env = app_env(
        base_url,
        workdir / "unused.db",
        OPENAI_AGENTS_DISABLE_TRACING="true",
        CEILING_TOKENS=str(args.tokens),
    )
    python = sys.executable
    specs = [
        ServerSpec(
            "ceiling",
            "ceiling",
            (python, str(ROOT / "bench" / "ceiling_app.py"), "--host", HOST, "--port", "{port}"),
            env,
        ),
        ServerSpec(
            "reference",
            "reference",
            (
                python,
                "-m",
                "uvicorn",
                "--app-dir",
                str(ROOT / "bench"),
                "reference_app:app",
                "--host",
                HOST,
                "--port",
                "{port}",
            ),
            env,
        ),
    ]
    serve = (python, "-m", "tripchat.cli", "serve", "--host", HOST, "--port", "{port}")
    for backend in args.backends:
        for n in args.processes:
            suffix = "" if n == 1 else f"-x{n}"
            if backend == "sqlite":
                url = f"sqlite:///{workdir / f'tripchat{suffix}.db'}"
            else:
                url = args.pg_url if n == 1 else _pg_sibling(args.pg_url, suffix.replace("-", "_"))
            specs.append(
                ServerSpec(
                    f"tripchat-{backend}{suffix}",
                    "tripchat",
                    serve,
                    {**env, "CHATKIT_DB_URL": url},
                    url,
                    n,
                )
            )
    return [spec for spec in specs if spec.kind in args.servers]


async def empty_postgres(url: str, admin_url: str) -> None:
    """Drop tripchat's tables so the server creates them afresh; a database other than
    admin_url's is created (through admin_url) when it does not exist yet."""
    name = urlsplit(url).path.lstrip("/")
    if url != admin_url:
        admin = await asyncpg.connect(admin_url)
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(TRIPCHAT_TABLES)} CASCADE")
    finally:
        await conn.close()
