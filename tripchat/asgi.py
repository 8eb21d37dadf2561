"""The HTTP surface: a minimal Starlette app, `POST /chatkit` and `GET /healthz`, plus the
routes a browser reaches without our headers: attachment uploads (two-phase at a signed
URL, direct at `POST /chatkit/files`), signed image previews and signed calendar
downloads (`GET /calendar/...`).

`hypercorn tripchat.asgi:app` serves it as is. The request bytes go straight to
`TripPlannerServer.process`; a streaming result becomes SSE, anything else JSON.
Client mistakes are 4xx with a JSON body that says what is wrong, never a 500.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import anyio
from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .agent import configure_tracing, create_trip_planner_agent, openai_client
from .attachments import Attachments, Upload
from .bridge import ignore_sdk_leftovers
from .config import EXIT_USAGE, ConfigError, Settings
from .context import RequestContext
from .dictation import Dictation
from .eventstream import EventStream
from .protocol import RequestError
from .server import TripPlannerServer
from .signing import Signer
from .store import open_store
from .tools import preload
from .uploads import Start, attachment_json, receive_file

logger = logging.getLogger("tripchat.asgi")

# How much of a refused body we read and drop so HTTP/2 peers keep their connection.
DISCARD_BYTES = 64 * 1024 * 1024
DISCARD_SECONDS = 5.0
MAX_USER_ID = 256
RETRY_AFTER_SECONDS = 5
PREVIEW_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one JSON error shape: {"error": {"status": ..., "message": ...}}."""
    return JSONResponse({"error": {"status": status, "message": message}}, status, headers)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over `limit` bytes (then the rest is discarded)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await discard_body(request)
        return None
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await discard_body(request)
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def discard_body(request: Request) -> None:
    """Drain what the client is still sending before refusing it, bounded in bytes and time.

    Hypercorn 0.18 drops a whole HTTP/2 connection when DATA arrives for a stream it
    already answered, killing the user's other streams (as nginx's lingering close
    avoids). Reading the rest first keeps the refusal to this one request.
    """
    if getattr(request.state, "body_read", False):
        return  # waiting for more would only wait for the client to leave
    drained = 0
    with anyio.move_on_after(DISCARD_SECONDS):
        while drained <= DISCARD_BYTES:
            message = await request.receive()
            drained += len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return


def authorized(request: Request, token: str | None) -> bool:
    """With CHATKIT_API_TOKEN set, only `Authorization: Bearer <token>` gets in."""
    if token is None:
        return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def user_of(request: Request, settings: Settings) -> str | None:
    """The user id from the trusted header, the demo user without one, None if unusable."""
    values = request.headers.getlist(settings.user_header)
    if not values:
        return settings.default_user
    if len(values) > 1:
        return None  # a proxy that appends instead of replacing: never guess which is true
    user_id = values[0].strip()
    if not user_id or len(user_id) > MAX_USER_ID or not user_id.isprintable():
        return None
    return user_id


async def warm_up() -> None:
    """Load the travel data off the event loop, then freeze the start-up heap.

    The first user does not pay for the data, and the garbage collector stops rescanning
    its ~200k long-lived objects on every full collection (measured: 7-11% of a turn's CPU).
    """
    await anyio.to_thread.run_sync(preload)
    gc.collect()
    gc.freeze()


def exit_at_start(exc: ConfigError) -> NoReturn:
    """End the process in one line: Hypercorn would print two tracebacks around the cause."""
    print(f"tripchat: {exc}", file=sys.stderr, flush=True)
    os._exit(EXIT_USAGE)


def create_app(
    settings: Settings | None = None, *, exit_on_config_error: bool = False
) -> Starlette:
    """The Starlette app; the store opens and closes with the app's lifespan.

    A process that serves only this app (`hypercorn tripchat.asgi:app`, `tripchat serve`)
    passes `exit_on_config_error`, so an unreachable database ends it with one line.
    """
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        configure_tracing(settings)
        ignore_sdk_leftovers(asyncio.get_running_loop())
        if settings.needs_api_key:
            logger.warning("OPENAI_API_KEY is not set: every reply will fail until it is")
        try:
            store = await open_store(settings.db_url, pool_size=settings.db_pool_size)
        except ConfigError as exc:
            if exit_on_config_error:
                exit_at_start(exc)
            raise
        client = openai_client(settings)
        warm = asyncio.create_task(warm_up())
        app.state.store = store
        signer = Signer(
            settings.secret_key.encode() if settings.secret_key else await store.secret_key()
        )
        attachments = Attachments(
            store,
            signer,
            max_bytes=settings.max_upload_bytes,
            retention_hours=settings.attachment_retention_hours,
            chat_completions=settings.use_chat_completions,
        )
        app.state.server = TripPlannerServer(
            store,
            create_trip_planner_agent(settings, client),
            history_items=settings.history_items,
            max_streams_per_user=settings.max_streams_per_user,
            lease_seconds=settings.lease_seconds,
            signer=signer,
            attachments=attachments,
            dictation=Dictation(client, settings.transcribe_model),
        )
        sweeper = asyncio.create_task(attachments.sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.wait([sweeper])
            try:
                await warm
            finally:
                await client.close()
                await store.close()

    async def caller(request: Request) -> str | Response:
        """The user a request with our headers acts for, or its refusal (body drained)."""
        if not authorized(request, settings.api_token):
            await discard_body(request)
            return error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        user_id = user_of(request, settings)
        if user_id is None:
            await discard_body(request)
            return error(
                400,
                f"{settings.user_header} must be given once, 1-{MAX_USER_ID} printable characters",
            )
        return user_id

    async def chatkit(request: Request) -> Response:
        user_id = await caller(request)
        if isinstance(user_id, Response):
            return user_id
        try:
            body = await read_body(request, settings.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            return error(413, f"request body is larger than {settings.max_body_bytes} bytes")
        server: TripPlannerServer = request.app.state.server
        try:
            result = await server.process(body, RequestContext(user_id, str(request.base_url)))
        except RequestError as exc:
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status in (429, 503) else None
            return error(exc.status, exc.message, retry)
        except NotFoundError as exc:
            return error(404, str(exc) or "not found")
        except Exception:
            logger.exception("request failed")
            return error(500, "internal server error")
        if isinstance(result, StreamingResult):
            return EventStream(result.json_events)
        return Response(result.json, media_type="application/json")

    async def calendar(request: Request) -> Response:
        # No user header or token here: the browser follows a link; its signature is the proof.
        server: TripPlannerServer = request.app.state.server
        query = request.query_params
        try:
            filename, body = await server.actions.calendar_file(
                request.path_params["thread_id"],
                request.path_params["item_id"],
                query.get("user", ""),
                query.get("expires", ""),
                query.get("signature", ""),
            )
        except RequestError as exc:
            return error(exc.status, exc.message)
        except NotFoundError as exc:
            return error(404, str(exc) or "not found")
        disposition = f'attachment; filename="{filename}"'
        headers = {"Content-Disposition": disposition, "Cache-Control": "private, no-store"}
        return Response(body, media_type="text/calendar", headers=headers)

    async def receive(request: Request, start: Start) -> Response:
        """Stream a multipart upload into the attachment `start` opens; refusals as JSON."""
        try:
            attachment = await receive_file(request, start, settings.max_upload_bytes)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        except (RequestError, NotFoundError) as exc:
            await discard_body(request)
            if isinstance(exc, RequestError):
                return error(exc.status, exc.message)
            return error(404, str(exc) or "not found")
        return Response(attachment_json(attachment), media_type="application/json")

    async def upload(request: Request) -> Response:
        """Two-phase upload: the signed URL from attachments.create, without our headers."""
        attachments: Attachments = request.app.state.server.attachments
        attachment_id = request.path_params["attachment_id"]
        try:
            owner = await attachments.signed_owner(
                "upload",
                attachment_id,
                request.query_params.get("expires", ""),
                request.query_params.get("signature", ""),
            )
        except RequestError as exc:
            await discard_body(request)
            return error(exc.status, exc.message)
        context = RequestContext(owner, str(request.base_url))

        async def start(name: str, declared: str) -> Upload:
            return await attachments.receive(attachment_id, context)

        return await receive(request, start)

    async def files(request: Request) -> Response:
        """Direct upload: the client's own request (our headers), the Attachment back."""
        user_id = await caller(request)
        if isinstance(user_id, Response):
            return user_id
        attachments: Attachments = request.app.state.server.attachments
        context = RequestContext(user_id, str(request.base_url))

        async def start(name: str, declared: str) -> Upload:
            return await attachments.receive_direct(name, declared, context)

        return await receive(request, start)

    async def preview(request: Request) -> Response:
        """An image's bytes for `<img src>`: the signature is the only credential."""
        attachments: Attachments = request.app.state.server.attachments
        try:
            mime, chunks = await attachments.preview(
                request.path_params["attachment_id"],
                request.query_params.get("expires", ""),
                request.query_params.get("signature", ""),
            )
        except RequestError as exc:
            return error(exc.status, exc.message)
        except NotFoundError as exc:
            return error(404, str(exc) or "not found")
        return StreamingResponse(chunks, media_type=mime, headers=PREVIEW_HEADERS)

    async def healthz(request: Request) -> Response:
        try:
            with anyio.fail_after(5):
                await request.app.state.store.ping()
        except Exception as exc:
            logger.warning("health check failed: %r", exc)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        draining = request.app.state.server.draining
        body: dict[str, Any] = {"status": "draining" if draining else "ok", "database": "ok"}
        return JSONResponse(body, 503 if draining else 200)

    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["POST", "GET", "OPTIONS"],
                allow_headers=["*"],
            )
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        # Routing refusals (404, 405) come before any read: drain the body as for a 413.
        assert isinstance(exc, HTTPException)
        await discard_body(request)
        return error(exc.status_code, exc.detail, exc.headers)

    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/chatkit", chatkit, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/calendar/{thread_id}/{item_id}.ics", calendar, methods=["GET"]),
            Route("/chatkit/files", files, methods=["POST"]),
            Route("/chatkit/attachments/{attachment_id}/upload", upload, methods=["POST"]),
            Route("/chatkit/attachments/{attachment_id}/preview", preview, methods=["GET"]),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )


def _app_from_env() -> Starlette:
    try:
        return create_app(exit_on_config_error=True)
    except ConfigError as exc:
        exit_at_start(exc)


app = _app_from_env()
