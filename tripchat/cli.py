"""The `tripchat` command: talk to the agent (`plan`) and serve ChatKit (`serve`).

Errors a user can fix (a missing key, a bad variable) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO, cast

import openai
from agents import Runner
from openai.types.responses import ResponseTextDeltaEvent

from .agent import configure_tracing, create_trip_planner_agent, openai_client
from .config import EXIT_USAGE, ConfigError, Settings
from .memory import StoreSession
from .migrate import migrate
from .smoke import Smoke
from .store import open_store
from .tools import describe_tool_call
from .workers import (
    child_argv,
    ignore_stop_signals,
    listen_each,
    on_stop_signals,
    supervise,
    watch_parent,
)

if TYPE_CHECKING:
    from .server import TripPlannerServer

KEEP_ALIVE_SECONDS = 75.0


def _settings() -> Settings:
    settings = Settings.from_env()
    if settings.needs_api_key:
        raise ConfigError(
            "OPENAI_API_KEY is not set: export OPENAI_API_KEY=sk-... "
            "(or OPENAI_BASE_URL for an endpoint that needs no key)"
        )
    return settings


async def _turn(agent: Any, text: str, session: StoreSession, out: TextIO) -> None:
    """Run one turn, printing text as it streams and each tool step on stderr."""
    result = Runner.run_streamed(agent, text, session=session)
    async for event in result.stream_events():
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            out.write(event.data.delta)
            out.flush()
        elif event.type == "run_item_stream_event" and event.name == "tool_called":
            raw = event.item.raw_item
            name = getattr(raw, "name", None) or (raw.get("name") if isinstance(raw, dict) else "")
            args = getattr(raw, "arguments", None) or (
                raw.get("arguments", "{}") if isinstance(raw, dict) else "{}"
            )
            print(f"[{describe_tool_call(str(name), str(args))}]", file=sys.stderr)
    out.write("\n")
    out.flush()


async def plan(prompt: str | None, single_turn: bool, session_id: str | None) -> int:
    """Chat with the planner; memory lives in the same database as the ChatKit store."""
    settings = _settings()
    configure_tracing(settings)
    session_id = session_id or f"cli_{uuid.uuid4().hex}"
    async with (
        openai_client(settings) as client,
        await open_store(settings.db_url, pool_size=settings.db_pool_size) as store,
    ):
        agent = create_trip_planner_agent(settings, client)
        session = StoreSession(session_id, store)
        if not single_turn:
            # Say whether an id resumed anything: a mistyped one starts afresh, visibly.
            earlier = len(await session.get_items())
            state = (
                f"resumed: {earlier} earlier items"
                if earlier
                else f"new; resume with --session {session_id}"
            )
            print(f"session {session_id} ({state}); empty line or Ctrl-D to quit", file=sys.stderr)
        if prompt:
            await _turn(agent, prompt, session, sys.stdout)
            if single_turn:
                return 0
        while True:
            try:
                text = await asyncio.to_thread(input, "you> ")
            except EOFError:
                return 0
            if not text.strip():
                return 0
            await _turn(agent, text, session, sys.stdout)


async def serve(
    host: str,
    port: int,
    certfile: str | None,
    keyfile: str | None,
    *,
    workers: int | None = None,
    fds: Sequence[int] = (),
    parent_fd: int | None = None,
) -> int:
    """Serve the app in this process, so SIGTERM drains replies instead of killing them;
    with several workers, bind here and supervise that many serving children (`workers`).

    `fds` are listening sockets a parent bound; `parent_fd` the pipe that tells it is gone.
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from .asgi import create_app

    settings = Settings.from_env()
    count = workers or settings.workers
    if count > 1 and settings.db_url.endswith(":memory:"):
        raise ConfigError("--workers/WEB_CONCURRENCY above 1 needs a database file or PostgreSQL")
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.certfile = certfile
    config.keyfile = keyfile
    # Hypercorn's default of 100 makes a burst of new connections wait for SYN retries.
    config.backlog = 2048
    if count > 1:
        port, per_child = listen_each(config, host, port, count)
        try:
            return await supervise(child_argv(host, port, certfile, keyfile), per_child)
        finally:
            ignore_stop_signals()
    if not fds:
        [fds] = listen_each(config, host, port, 1)[1]
    config.bind = [f"fd://{fd}" for fd in fds]
    app = create_app(settings, exit_on_config_error=True)
    # Hypercorn's loggers as plain loggers: one format, each line once.
    config.accesslog = logging.getLogger("hypercorn.access")
    config.errorlog = logging.getLogger("hypercorn.error")
    # Hypercorn's own wait must outlast ours: the server ends its streams at the grace.
    config.graceful_timeout = settings.shutdown_grace + 5
    # Outlast the idle time-out of a proxy in front (60 s on common load balancers): a
    # connection the server closes just as the proxy reuses it fails the user's request.
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    stop = asyncio.Event()

    def hurry() -> None:  # the server exists once start-up is done; before, nothing to hurry
        server = cast("TripPlannerServer | None", getattr(app.state, "server", None))
        if server is not None:
            server.hurry()

    on_stop_signals(stop, hurry, worker=parent_fd is not None)
    if parent_fd is not None:
        watch_parent(parent_fd, stop)
    drain: list[asyncio.Task[None]] = []

    async def shutdown_trigger() -> None:
        await stop.wait()
        logging.getLogger("tripchat").info(
            "shutting down: finishing replies for up to %ss", settings.shutdown_grace
        )
        drain.append(asyncio.create_task(app.state.server.drain(settings.shutdown_grace)))

    try:
        await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
        if drain:
            await drain[0]
    finally:
        ignore_stop_signals()
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tripchat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    plan_cmd = commands.add_parser("plan", help="plan a trip with the agent in the terminal")
    plan_cmd.add_argument("prompt", nargs="?", help="first message (omit to start chatting)")
    plan_cmd.add_argument("--single-turn", action="store_true", help="answer once and exit")
    plan_cmd.add_argument("--session", help="resume the conversation with this id")

    serve_cmd = commands.add_parser("serve", help="serve ChatKit over HTTP/1.1 and HTTP/2")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--certfile", help="TLS certificate (enables HTTPS and h2 by ALPN)")
    serve_cmd.add_argument("--keyfile", help="TLS private key")
    serve_cmd.add_argument(
        "--workers",
        type=_positive,
        help="serving processes sharing the port (default: WEB_CONCURRENCY, else 1)",
    )
    # Internal: how a worker gets its parent's sockets and the pipe that outlives it.
    serve_cmd.add_argument("--fd", type=int, action="append", default=[], help=argparse.SUPPRESS)
    serve_cmd.add_argument("--parent-fd", type=int, help=argparse.SUPPRESS)
    migrate_cmd = commands.add_parser("migrate", help="copy every conversation to another database")
    migrate_cmd.add_argument("--from", dest="source", required=True, help="source CHATKIT_DB_URL")
    migrate_cmd.add_argument("--to", dest="target", required=True, help="target CHATKIT_DB_URL")
    migrate_cmd.add_argument("--batch", type=int, default=500, help="rows per batch")
    smoke_cmd = commands.add_parser("smoke", help="check a running server with a canned chat")
    smoke_cmd.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    smoke_cmd.add_argument("--user-id", default="smoke-test", help="sent as X-User-Id")
    smoke_cmd.add_argument(
        "--token", default=os.environ.get("CHATKIT_API_TOKEN"), help="bearer token, if required"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "plan" and args.single_turn and not args.prompt:
        parser.error("plan --single-turn needs a prompt")
    # `plan` shares the terminal with the conversation: only warnings, no request log.
    level = logging.WARNING if args.command == "plan" else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The access log already shows each request; the model client's line per call is noise.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if args.command == "plan":
        # The SDK logs a failed model request before raising it; main() reports it in one line.
        logging.getLogger("openai.agents").setLevel(logging.CRITICAL)
    try:
        if args.command == "plan":
            return asyncio.run(plan(args.prompt, args.single_turn, args.session))
        if args.command == "smoke":
            return 0 if Smoke(args.url, args.user_id, args.token).run() else 1
        if args.command == "migrate":
            same = asyncio.run(migrate(args.source, args.target, batch=max(1, args.batch)))
            return 0 if same else 1
        return asyncio.run(
            serve(
                args.host,
                args.port,
                args.certfile,
                args.keyfile,
                workers=args.workers,
                fds=args.fd,
                parent_fd=args.parent_fd,
            )
        )
    except ConfigError as exc:
        print(f"tripchat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except openai.APIError as exc:
        print(f"tripchat: the model request failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
