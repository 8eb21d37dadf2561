"""A real tripchat server in a subprocess on 127.0.0.1, for tests that need the whole stack.

`ServerProcess` runs `python -m tripchat.cli serve` (or any command) in its own process
group with a minimal environment, logs to a file, waits for `/healthz`, and always ends
the process it started: SIGTERM to its group, then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

HOST = "127.0.0.1"
PORT_PLACEHOLDER = "{port}"
"""Replaced by the chosen port in every argument of a custom argv."""
# Bounds against a hang, not speed checks: a server's start (imports, schema) and its
# exit take several times longer while other tests run beside it (pytest-xdist) on a
# busy 2-core machine (20 s and 10 s were seen to run out there).
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
KILL_TIMEOUT = 5.0
POLL_SECONDS = 0.05
LOG_TAIL = 6000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """PATH (this interpreter's bin first), HOME and unbuffered output, plus `extra`."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)])
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


def app_env(openai_base_url: str, db_path: Path, **extra: str) -> dict[str, str]:
    """The app's variables for a run against the OpenAI mock with its own SQLite file."""
    return {
        "OPENAI_BASE_URL": openai_base_url,
        "OPENAI_API_KEY": "test",
        "CHATKIT_DB_URL": f"sqlite:///{db_path}",
        "CHATKIT_TRACING": "false",
        **extra,
    }


PROCFILE = Path(__file__).parents[1] / "Procfile"


def procfile_argv() -> list[str]:
    """The Procfile's `web:` command, `$PORT` a placeholder and 0.0.0.0 kept to loopback."""
    web = [line for line in PROCFILE.read_text().splitlines() if line.startswith("web:")]
    assert len(web) == 1, f"Procfile needs one web: line, has {web}"
    command = web[0].removeprefix("web:").strip()
    assert "$PORT" in command, command
    argv = shlex.split(command.replace("$PORT", PORT_PLACEHOLDER))
    return [HOST if arg == "0.0.0.0" else arg for arg in argv]


def serve_argv(port: int, certfile: Path | None = None, keyfile: Path | None = None) -> list[str]:
    """`python -m tripchat.cli serve` on 127.0.0.1:port, with TLS when given a certificate."""
    argv = [sys.executable, "-m", "tripchat.cli", "serve", "--host", HOST, "--port", str(port)]
    if certfile is not None:
        argv += ["--certfile", str(certfile)]
    if keyfile is not None:
        argv += ["--keyfile", str(keyfile)]
    return argv


class ServerProcess:
    """One server subprocess; a context manager that starts it ready and stops it after.

    `env` is added to a minimal environment (PORT is always set to the port). A custom
    `argv` may use `{port}`; pass `scheme="https"` when it serves TLS.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        argv: Sequence[str] | None = None,
        *,
        workdir: Path | None = None,
        port: int | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        scheme: str | None = None,
        name: str = "server",
    ) -> None:
        self.port = port or free_port()
        if argv is None:
            self.argv = serve_argv(self.port, certfile, keyfile)
        else:
            self.argv = [arg.replace(PORT_PLACEHOLDER, str(self.port)) for arg in argv]
        self.scheme = scheme or ("https" if certfile is not None else "http")
        self.env = minimal_env({**(env or {}), "PORT": str(self.port)})
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="tripchat-server-"))
        self.log_path = self.workdir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        """The server's base URL, e.g. http://127.0.0.1:PORT."""
        return f"{self.scheme}://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The process id, which is also its process group id."""
        if self.process is None:
            raise RuntimeError("the server has not been started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs."""
        return None if self.process is None else self.process.poll()

    def start(self) -> ServerProcess:
        """Start the process in its own session (process group), output to the log file."""
        if self.process is not None:
            raise RuntimeError("the server was already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll GET /healthz until it answers 200; fail with the log if it exits or times out."""
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=False, trust_env=False, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.returncode is not None:
                    raise RuntimeError(f"server exited with {self.returncode}:\n{self.log()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(POLL_SECONDS)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def send_signal(self, signum: int, *, group: bool = True) -> None:
        """Signal the process group (as a platform does) or only the process itself."""
        try:
            if group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int:
        """Wait for the exit status; raises subprocess.TimeoutExpired after `timeout`."""
        if self.process is None:
            raise RuntimeError("the server has not been started")
        return self.process.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the group, wait up to `timeout`, then SIGKILL it; returns the exit status."""
        if self.process is None or self._stopped:
            return self.returncode
        self._stopped = True
        if self.process.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.process.wait(KILL_TIMEOUT)
        # Children that outlived the leader (a worker pool) go with the group.
        self.send_signal(signal.SIGKILL)
        return self.process.returncode

    def log(self, tail: int = LOG_TAIL) -> str:
        """The last `tail` characters of the server's output, for assertion messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text[-tail:]

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
