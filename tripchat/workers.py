"""`tripchat serve --workers N`: N serving processes on one port.

The parent binds a listening socket per child, all on one port with SO_REUSEPORT, and
starts N children (`tripchat serve --fd ...`), each inheriting its own; the kernel spreads
new connections over them by address. One socket shared by every child does not spread
them: the child that wakes first accepts the whole burst waiting (asyncio accepts up to
the backlog per wake-up), and keep-alive keeps them there. Measured with 40 keep-alive
clients: one child did 9.6 s of the work, the other 0.1 s. Each child runs
Hypercorn's serve loop itself, so SIGTERM drains it as it drains a single `serve`; a
platform signals the whole process group, and the parent forwards the signal for a
platform (or a person) that signals only the parent. The parent exits 0 once every child
has drained and exited 0.

A child that exits on its own (or is killed) is not restarted: the parent reports it,
drains the others and exits non-zero (the child's status for a configuration error, else 1), so the
platform's supervisor restarts the whole server and the failure is seen rather than
hidden. Its replies' leases expire and are taken over (`store.leases`). The children watch
a pipe from the parent: if the parent dies (SIGKILL), they drain and exit too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .config import EXIT_USAGE, ConfigError

if TYPE_CHECKING:
    from hypercorn.config import Config

logger = logging.getLogger("tripchat.workers")

HURRY = signal.SIGUSR1
"""A parent's word to its workers on a second Ctrl-C. They cannot count SIGINTs themselves:
the terminal's reaches them too, in either order with the parent's SIGTERM."""
SECOND_CTRL_C_SECONDS = 0.5
"""A SIGINT this soon after the first is the same Ctrl-C, forwarded by a wrapper (a process
manager, `npm run`) as well as sent by the terminal: it does not hurry."""


async def _spawn(argv: Sequence[str], fds: Sequence[int]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*argv, pass_fds=tuple(fds))


def listen_each(config: Config, host: str, port: int, count: int) -> tuple[int, list[list[int]]]:
    """The port bound (the one chosen for port 0) and `count` sets of listening sockets'
    descriptors on it, one set per serving process (SO_REUSEPORT when more than one).

    Bound before the app starts: a taken port is one line, with no database left open."""
    if count > 1 and port != 0:
        _refuse_a_taken_port(host, port)
    config.workers = count  # Hypercorn sets SO_REUSEPORT on the sockets it makes
    per_child: list[list[int]] = []
    for _ in range(count):
        try:
            made = config.create_sockets()
        except OSError as exc:
            raise _cannot_listen(host, port, exc) from None
        sockets = [*made.secure_sockets, *made.insecure_sockets]
        if port == 0:  # the next processes' sockets join the port the kernel chose
            port = int(sockets[0].getsockname()[1])
            config.bind = [f"{host}:{port}"]
        per_child.append([sock.detach() for sock in sockets])
    return port, per_child


def _refuse_a_taken_port(host: str, port: int) -> None:
    """SO_REUSEPORT would let a second server of the same user join a running one on its
    port, splitting the traffic between two versions: a plain bind refuses that, as a
    single `serve` does."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise _cannot_listen(host, port, exc) from None


def _cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


async def supervise(child_argv: Sequence[str], sockets: Sequence[Sequence[int]]) -> int:
    """Run a child of `child_argv` per set of listening `sockets` (each its own, added as
    `--fd` options); return once they all have exited."""
    alive_read, alive_write = os.pipe()  # the children see EOF when this process is gone
    children = []
    for fds in sockets:
        argv = [*child_argv, "--parent-fd", str(alive_read)]
        for fd in fds:
            argv += ["--fd", str(fd)]
        children.append(await _spawn(argv, [*fds, alive_read]))
    for fd in (*(fd for fds in sockets for fd in fds), alive_read):
        os.close(fd)  # the children hold them; a drained child's socket must not linger here
    count = len(children)
    logger.info("serving with %d worker processes: %s", count, [c.pid for c in children])
    stopping = asyncio.Event()

    def hurry() -> None:
        for child in children:
            _signal(child, HURRY)

    on_stop_signals(stopping, hurry, worker=False)
    waits = {asyncio.create_task(child.wait()): child for child in children}
    stop = asyncio.create_task(stopping.wait())
    pending, status = set(waits), 0
    try:
        while pending:
            watched = pending if stop.done() else {*pending, stop}
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in done & pending:
                child = waits[task]
                if not stopping.is_set() or child.returncode != 0:
                    logger.error("worker %d exited with status %s", child.pid, child.returncode)
                    status = status or (EXIT_USAGE if child.returncode == EXIT_USAGE else 1)
                stopping.set()
            pending -= done
            if stop in done or (stopping.is_set() and not stop.done()):
                await stop  # set just above, or by a signal: every child drains once
                for task in pending:
                    _signal(waits[task], signal.SIGTERM)
    finally:
        stop.cancel()
        os.close(alive_write)
    return status


def on_stop_signals(stop: asyncio.Event, hurry: Callable[[], None], *, worker: bool) -> None:
    """How `serve` answers signals, as one process or as the parent of workers.

    SIGTERM or SIGINT sets `stop`: drain. A second Ctrl-C (a SIGINT at least
    `SECOND_CTRL_C_SECONDS` after the first) also calls `hurry`, to stop waiting for
    replies: nobody waits out a grace they did not ask for. A worker hurries only on
    `HURRY` from its parent. A platform's SIGTERMs, however many, only drain."""
    loop = asyncio.get_running_loop()
    first: float | None = None

    def interrupt() -> None:
        nonlocal first
        if first is None:
            first = loop.time()
        elif loop.time() - first >= SECOND_CTRL_C_SECONDS:
            hurry()
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set if worker else interrupt)
    if worker:
        loop.add_signal_handler(HURRY, hurry)


def ignore_stop_signals() -> None:
    """Drained: a signal still on its way (a platform signals the whole group and the
    parent forwards it to its workers too) must not kill the exit with status -15, which
    closing the event loop would let it do (it restores the default action)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, HURRY):
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)


def _signal(child: asyncio.subprocess.Process, signum: int) -> None:
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)


def watch_parent(fd: int, stop: asyncio.Event) -> None:
    """Set `stop` when the parent's end of the pipe closes: the parent died."""
    loop = asyncio.get_running_loop()

    def parent_gone() -> None:
        loop.remove_reader(fd)
        logger.warning("the parent process is gone: shutting down")
        stop.set()

    loop.add_reader(fd, parent_gone)


def child_argv(host: str, port: int, certfile: str | None, keyfile: str | None) -> list[str]:
    """The command a child runs: `tripchat serve` as one process."""
    argv = [sys.executable, "-m", "tripchat.cli", "serve", "--host", host, "--port", str(port)]
    argv += ["--workers", "1"]
    if certfile:
        argv += ["--certfile", certfile]
    if keyfile:
        argv += ["--keyfile", keyfile]
    return argv
