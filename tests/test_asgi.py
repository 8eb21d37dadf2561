"""The Starlette app in-process: routing, status codes, headers and JSON errors of every request."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from chatkit.types import AssistantMessageItem, ClientToolCallItem
from openai_mock import OpenAIMock
from starlette.applications import Starlette
from test_server import (
    close_model_client,
    parse_frames,
    reply_text,
    request,
    user_input,
    words,
)

from tripchat.asgi import create_app
from tripchat.config import Settings
from tripchat.context import RequestContext
from tripchat.store import SQLStore

pytestmark = pytest.mark.anyio

ORIGIN = "http://localhost:5173"
TOKEN = "s3cret-token"


def error_message(response: httpx.Response, status: int) -> str:
    """Check the one JSON error shape and return its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {"error": {"status": status, "message": body["error"]["message"]}}
    message: str = body["error"]["message"]
    assert message
    return message


@dataclass
class Client:
    """An HTTP client on the app, with shortcuts for ChatKit requests."""

    http: httpx.AsyncClient
    app: Starlette

    @property
    def store(self) -> SQLStore:
        """The app's store, opened by its lifespan."""
        store: SQLStore = self.app.state.store
        return store

    async def post(self, body: bytes, user: str | None = "alice", **headers: str) -> httpx.Response:
        """POST a body to /chatkit, as `user` (no user header when None)."""
        if user is not None:
            headers.setdefault("X-User-Id", user)
        return await self.http.post("/chatkit", content=body, headers=headers)

    async def stream(
        self, body: bytes, user: str | None = "alice", **headers: str
    ) -> list[dict[str, Any]]:
        """POST a streaming request and check it was answered as SSE."""
        response = await self.post(body, user, **headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in response.headers["cache-control"]
        assert response.headers["x-accel-buffering"] == "no"
        return parse_frames(response.content)

    async def json(self, body: bytes, user: str | None = "alice", **headers: str) -> Any:
        """POST a non-streaming request and check it was answered as JSON."""
        response = await self.post(body, user, **headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return response.json()

    async def create(
        self, text: str = "hi [tokens 2]", user: str | None = "alice", **headers: str
    ) -> str:
        """Start a thread; its id."""
        events = await self.stream(
            request("threads.create", input=user_input(text)), user, **headers
        )
        assert events[-1]["type"] != "error", events[-1]
        thread_id: str = events[0]["thread"]["id"]
        return thread_id


def http_scope(path: str, query: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An HTTP/1.1 POST's ASGI scope, as Hypercorn gives it, for calling the app directly."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }


Serve = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture
def settings(openai_mock: OpenAIMock, tmp_path: Path) -> Settings:
    """The app's settings: a fresh SQLite file and the scripted model."""
    return Settings(
        db_url=f"sqlite:///{tmp_path}/t.db",
        openai_base_url=openai_mock.base_url,
        openai_api_key="test",
        model_max_retries=0,
        tracing=False,
    )


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Client]:
    """Run the app (lifespan included) on these settings, and a client on it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield Client(http, app)
        finally:
            await close_model_client(app.state.server.agent)


@pytest.fixture
def serve(settings: Settings) -> Serve:
    """Run the app with some settings changed, and a client on it."""
    return lambda **overrides: running_app(replace(settings, **overrides))


@pytest.fixture
async def client(serve: Serve) -> AsyncIterator[Client]:
    """A client on the app with the default settings."""
    async with serve() as running:
        yield running


@dataclass(frozen=True)
class Exchange:
    """A thread with one finished exchange, by id."""

    thread_id: str
    user_item: str
    reply: str


@pytest.fixture
async def exchange(client: Client) -> Exchange:
    """A thread of alice's with one question and its answer."""
    thread_id = await client.create()
    items = (await client.json(request("items.list", thread_id=thread_id, order="asc")))["data"]
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]
    return Exchange(thread_id, items[0]["id"], items[1]["id"])


# -- every request type ------------------------------------------------------------------


async def test_threads_create_streams_the_reply(client: Client) -> None:
    events = await client.stream(request("threads.create", input=user_input("Porto? [tokens 3]")))

    assert events[0]["type"] == "thread.created"
    assert events[-1]["type"] == "thread.updated"
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assert [i["type"] for i in done] == ["user_message", "assistant_message"]
    assert done[1]["content"][0]["text"] == words(3)


async def test_add_user_message_and_retry_stream(client: Client, exchange: Exchange) -> None:
    events = await client.stream(
        request(
            "threads.add_user_message",
            thread_id=exchange.thread_id,
            input=user_input("more [tokens 1]"),
        )
    )
    assert events[-1]["type"] == "thread.item.done"
    assert events[-1]["item"]["content"][0]["text"] == words(1)

    retried = await client.stream(
        request(
            "threads.retry_after_item", thread_id=exchange.thread_id, item_id=exchange.user_item
        )
    )
    assert retried[-1]["type"] == "thread.item.done"
    listed = await client.json(request("items.list", thread_id=exchange.thread_id, order="asc"))
    assert [i["type"] for i in listed["data"]] == ["user_message", "assistant_message"]
    assert listed["data"][1]["id"] != exchange.reply


async def test_add_client_tool_output_streams(client: Client, exchange: Exchange) -> None:
    pending = ClientToolCallItem(
        id="tc_1",
        thread_id=exchange.thread_id,
        created_at=datetime.now(),
        call_id="call_1",
        name="get_location",
        arguments={},
    )
    await client.store.add_thread_item(exchange.thread_id, pending, RequestContext("alice"))

    events = await client.stream(
        request(
            "threads.add_client_tool_output", thread_id=exchange.thread_id, result={"city": "Faro"}
        )
    )

    assert events[-1]["type"] == "thread.item.done"
    assert events[-1]["item"]["type"] == "assistant_message"


async def test_json_requests(client: Client, exchange: Exchange) -> None:
    thread = await client.json(request("threads.get_by_id", thread_id=exchange.thread_id))
    assert thread["id"] == exchange.thread_id and len(thread["items"]["data"]) == 2

    listed = await client.json(request("threads.list", limit=5))
    assert [t["id"] for t in listed["data"]] == [exchange.thread_id]

    items = await client.json(
        request("items.list", thread_id=exchange.thread_id, limit=1, order="desc")
    )
    assert [i["id"] for i in items["data"]] == [exchange.reply] and items["has_more"]

    feedback = request(
        "items.feedback", thread_id=exchange.thread_id, item_ids=[exchange.reply], kind="negative"
    )
    assert await client.json(feedback) == {}
    saved = await client.store.load_feedback(exchange.thread_id, RequestContext("alice"))
    assert saved == {exchange.reply: "negative"}

    renamed = await client.json(
        request("threads.update", thread_id=exchange.thread_id, title="Faro")
    )
    assert renamed["title"] == "Faro"

    assert await client.json(request("threads.delete", thread_id=exchange.thread_id)) == {}
    assert (await client.json(request("threads.list")))["data"] == []


# -- bad input -----------------------------------------------------------------------------


BAD_BODIES: dict[str, tuple[bytes, str]] = {
    "malformed json": (b'{"type": "threads.list", ', "not valid JSON"),
    "empty body": (b"", "not valid JSON"),
    "not utf-8": (b"\xff\xfe\x00", "not valid JSON"),
    "json array": (b"[]", "object"),
    "json string": (b'"threads.list"', "object"),
    "json null": (b"null", "object"),
    "unknown type": (request("threads.explode"), "unknown request type 'threads.explode'"),
    "missing type": (b'{"params": {}}', "no 'type'"),
    "type not a string": (b'{"type": 7, "params": {}}', "unknown request type"),
    "missing params": (b'{"type": "threads.get_by_id"}', "params: Field required"),
    "missing param": (request("threads.get_by_id"), "params.thread_id: Field required"),
    "param of wrong type": (request("threads.get_by_id", thread_id=5), "params.thread_id"),
    "params not an object": (b'{"type": "threads.list", "params": [1]}', "params"),
    "limit not a number": (request("threads.list", limit="many"), "params.limit"),
    "negative limit": (request("threads.list", limit=-3), "limit must be at least 1"),
    "bad order": (request("threads.list", order="sideways"), "params.order"),
    "bad feedback kind": (
        request("items.feedback", thread_id="t", item_ids=["i"], kind="meh"),
        "params.kind",
    ),
    "too many attachments": (
        request("threads.create", input={**user_input("x"), "attachments": list("abcde")}),
        "at most 4 attachments",
    ),
    "input without content": (
        request("threads.create", input={"attachments": [], "inference_options": {}}),
        "params.input.content",
    ),
    "overlong title": (request("threads.update", thread_id="t", title="x" * 500), "title"),
    "blank title": (
        request("threads.update", thread_id="t", title="  "),
        "title must not be empty",
    ),
    "empty message": (request("threads.create", input=user_input(" \n ")), "the message is empty"),
    "no message parts": (
        request(
            "threads.add_user_message", thread_id="t", input={**user_input("x"), "content": []}
        ),
        "the message is empty",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_input_is_400_naming_the_problem(
    client: Client, exchange: Exchange, case: str
) -> None:
    body, expected = BAD_BODIES[case]
    body = body.replace(b'"t"', json.dumps(exchange.thread_id).encode())

    message = error_message(await client.post(body), 400)

    assert expected in message
    assert len(message) < 1000


NOT_FOUND: dict[str, Callable[[Exchange], bytes]] = {
    "get unknown thread": lambda e: request("threads.get_by_id", thread_id="thr_missing"),
    "message to unknown thread": lambda e: request(
        "threads.add_user_message", thread_id="thr_missing", input=user_input("x")
    ),
    "items of unknown thread": lambda e: request("items.list", thread_id="thr_missing"),
    "retry unknown item": lambda e: request(
        "threads.retry_after_item", thread_id=e.thread_id, item_id="msg_missing"
    ),
    "feedback on unknown item": lambda e: request(
        "items.feedback", thread_id=e.thread_id, item_ids=["msg_missing"], kind="positive"
    ),
    "rename unknown thread": lambda e: request(
        "threads.update", thread_id="thr_missing", title="x"
    ),
    "delete unknown thread": lambda e: request("threads.delete", thread_id="thr_missing"),
    "page after unknown thread": lambda e: request("threads.list", after="thr_missing"),
    "items after unknown item": lambda e: request(
        "items.list", thread_id=e.thread_id, after="msg_missing"
    ),
}


@pytest.mark.parametrize("case", list(NOT_FOUND))
async def test_unknown_ids_are_404(client: Client, exchange: Exchange, case: str) -> None:
    message = error_message(await client.post(NOT_FOUND[case](exchange)), 404)
    assert "missing" in message


async def test_retry_after_an_assistant_item_is_400(client: Client, exchange: Exchange) -> None:
    body = request("threads.retry_after_item", thread_id=exchange.thread_id, item_id=exchange.reply)
    assert "not a user message" in error_message(await client.post(body), 400)


async def test_tool_output_without_a_pending_call_is_400(
    client: Client, exchange: Exchange
) -> None:
    body = request("threads.add_client_tool_output", thread_id=exchange.thread_id, result=1)
    assert "no pending client tool call" in error_message(await client.post(body), 400)


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    """A body sent in pieces, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_is_413(serve: Serve, chunked: bool) -> None:
    body = request("threads.create", input=user_input("x" * 3000))
    async with serve(max_body_bytes=2048) as client:
        content: Any = _chunks(body, 500) if chunked else body
        response = await client.http.post("/chatkit", content=content)
        assert "2048" in error_message(response, 413)
        assert (await client.json(request("threads.list")))["data"] == []


# -- who is asking ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "given", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"]
)
async def test_a_missing_or_wrong_token_is_401(serve: Serve, given: str | None) -> None:
    async with serve(api_token=TOKEN) as client:
        headers = {} if given is None else {"Authorization": given}
        response = await client.post(request("threads.list"), **headers)
        assert "bearer token" in error_message(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"


async def test_the_right_token_gets_in(serve: Serve) -> None:
    async with serve(api_token=TOKEN) as client:
        thread_id = await client.create(Authorization=f"Bearer {TOKEN}")
        listed = await client.json(request("threads.list"), Authorization=f"Bearer {TOKEN}")
        assert [t["id"] for t in listed["data"]] == [thread_id]
        assert (await client.http.get("/healthz")).status_code == 200


async def test_users_only_see_their_own_threads(client: Client, exchange: Exchange) -> None:
    bob_thread = await client.create(user="bob")

    for body in (
        request("threads.get_by_id", thread_id=exchange.thread_id),
        request("items.list", thread_id=exchange.thread_id),
        request("threads.add_user_message", thread_id=exchange.thread_id, input=user_input("hi")),
        request("threads.delete", thread_id=exchange.thread_id),
    ):
        error_message(await client.post(body, user="bob"), 404)
    bob_list = await client.json(request("threads.list"), user="bob")
    assert [t["id"] for t in bob_list["data"]] == [bob_thread]
    alice_list = await client.json(request("threads.list"))
    assert [t["id"] for t in alice_list["data"]] == [exchange.thread_id]


@pytest.mark.parametrize(
    "user", ["x" * 257, "   ", "al\x01ice", "bob\x7f"], ids=["long", "blank", "control", "del"]
)
async def test_an_unusable_user_id_is_400(client: Client, user: str) -> None:
    message = error_message(await client.post(request("threads.list"), user=user), 400)
    assert "X-User-Id" in message


async def test_a_user_header_given_twice_is_400(client: Client) -> None:
    """A proxy that appends the header leaves the client's own value first: trust neither."""
    headers = [("X-User-Id", "alice"), ("X-User-Id", "bob")]
    response = await client.http.post("/chatkit", content=request("threads.list"), headers=headers)
    assert "given once" in error_message(response, 400)


async def test_the_user_header_setting_is_honoured(serve: Serve) -> None:
    async with serve(user_header="X-Forwarded-User", default_user="guest") as client:
        carol = await client.create(user=None, **{"X-Forwarded-User": "carol"})
        # The usual header means nothing here: that request is the default user's.
        guest = await client.create(user="carol")

        as_carol = await client.json(
            request("threads.list"), user=None, **{"X-Forwarded-User": "carol"}
        )
        assert [t["id"] for t in as_carol["data"]] == [carol]
        as_guest = await client.json(request("threads.list"), user=None)
        assert [t["id"] for t in as_guest["data"]] == [guest]
        error_message(
            await client.post(request("threads.list"), user=None, **{"X-Forwarded-User": " "}), 400
        )


async def test_without_a_user_header_requests_are_the_default_users(client: Client) -> None:
    thread_id = await client.create(user=None)

    page = await client.store.load_threads(10, None, "desc", RequestContext("local"))
    assert [t.id for t in page.data] == [thread_id]
    assert (await client.json(request("threads.list")))["data"] == []


async def test_a_model_failure_logs_one_warning_and_no_error(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A client can make the model fail (a message past its context): not an ERROR for ops."""
    with caplog.at_level(logging.WARNING):
        events = await client.stream(request("threads.create", input=user_input("hi [error 400]")))
    assert events[-1]["type"] == "error"
    loud = [(r.name, r.levelname) for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [("tripchat.bridge", "WARNING")]


async def test_a_client_gone_before_the_first_frame_stops_its_reply(
    client: Client, exchange: Exchange
) -> None:
    """The client left while its reply was being set up, and the connection is slow to
    take the response's first bytes (a closing transport): the reply is stopped with the
    response, not run to the end for nobody with the thread and the user's place held.
    Nothing had been sent, so the request may or may not have been applied; a reply
    stopped mid-way keeps what it had, as any stopped reply does."""
    body = request(
        "threads.add_user_message",
        thread_id=exchange.thread_id,
        input=user_input("a long one [tokens 200] [delay 0.05]"),
    )
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def slow_send(message: dict[str, Any]) -> None:
        for _ in range(3):
            await anyio.sleep(0)

    scope = http_scope("/chatkit", "", [(b"x-user-id", b"alice")])
    with anyio.fail_after(20):
        await client.app(scope, receive, slow_send)
        assert client.app.state.server.streams.live() == []  # ended with the response
        again = request(
            "threads.add_user_message",
            thread_id=exchange.thread_id,
            input=user_input("again [tokens 2]"),
        )
        assert reply_text(await client.stream(again)) == words(2)
    items = await client.store.load_thread_items(
        exchange.thread_id, None, 20, "asc", RequestContext("alice")
    )
    texts = [i.content[0].text for i in items.data if isinstance(i, AssistantMessageItem)]
    assert texts[-1] == words(2) and words(200) not in texts


# -- other routes ----------------------------------------------------------------------


async def test_healthz(client: Client) -> None:
    response = await client.http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_healthz_is_503_when_the_database_fails(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> None:
        raise OSError("database is gone")

    monkeypatch.setattr(client.store, "ping", down)
    response = await client.http.get("/healthz")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "unavailable"
    assert "gone" not in response.text


async def test_healthz_is_503_while_draining(client: Client) -> None:
    await client.app.state.server.drain(0)

    response = await client.http.get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "draining"
    refused = await client.post(request("threads.create", input=user_input("x")))
    assert error_message(refused, 503)
    assert refused.headers["retry-after"] == "5"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_on_chatkit_are_405(client: Client, method: str) -> None:
    response = await client.http.request(method, "/chatkit")
    assert response.status_code == 405
    assert response.json()["error"]["status"] == 405


async def test_an_unknown_path_is_404(client: Client) -> None:
    response = await client.http.post("/v1/chatkit", content=request("threads.list"))
    assert response.status_code == 404
    assert response.json() == {"error": {"status": 404, "message": "Not Found"}}


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-user-id",
    }


async def test_cors_allows_only_the_configured_origins(serve: Serve) -> None:
    async with serve(cors_origins=(ORIGIN,)) as client:
        allowed = await client.http.options("/chatkit", headers=_preflight(ORIGIN))
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in allowed.headers["access-control-allow-methods"]

        other = await client.http.options("/chatkit", headers=_preflight("http://evil.example"))
        assert other.status_code < 500
        assert "access-control-allow-origin" not in other.headers

        simple = await client.post(request("threads.list"), Origin=ORIGIN)
        assert simple.headers["access-control-allow-origin"] == ORIGIN

        create = request("threads.create", input=user_input("Porto? [tokens 2]"))
        streamed = await client.post(create, Origin=ORIGIN)
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.headers["access-control-allow-origin"] == ORIGIN
        assert parse_frames(streamed.content)[-1]["type"] == "thread.updated"


async def test_without_cors_origins_no_cors_headers(client: Client) -> None:
    response = await client.http.options("/chatkit", headers=_preflight(ORIGIN))
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code == 405


async def test_an_unexpected_failure_is_a_json_500_without_details(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*args: Any) -> Any:
        raise RuntimeError("secret internals at 0xdeadbeef")

    monkeypatch.setattr(client.app.state.server, "process", explode)
    response = await client.post(request("threads.list"))

    assert error_message(response, 500) == "internal server error"
    assert "Traceback" not in response.text and "deadbeef" not in response.text
