"""TripPlannerServer without HTTP: a real SQLite store, the agent on the scripted model."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import pytest
from agents import Agent, AgentHooks, RunContextWrapper
from chatkit.server import NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageItem,
    ClientToolCallItem,
    HiddenContextItem,
    SDKHiddenContextItem,
    ThreadItem,
    UserMessageItem,
)
from openai_mock import OpenAIMock, RecordedRequest

from tripchat import streams
from tripchat.agent import configure_tracing, create_trip_planner_agent
from tripchat.config import Settings
from tripchat.context import RequestContext
from tripchat.protocol import RequestError
from tripchat.server import TripPlannerServer
from tripchat.store import SQLStore

pytestmark = pytest.mark.anyio

ALICE = RequestContext("alice")
BOB = RequestContext("bob")
LISBON_CALL = '[call find_destination {"name": "Lisbon"}] [tokens 2]'
HIDDEN_TYPES = ("hidden_context_item", "sdk_hidden_context")


def words(count: int) -> str:
    """The text the scripted model streams for `[tokens count]`."""
    return "".join(f"w{i} " for i in range(count))


def user_input(text: str, attachments: list[str] | None = None) -> dict[str, Any]:
    """A ChatKit `UserMessageInput` carrying one text part."""
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
    }


def request(kind: str, /, **params: Any) -> bytes:
    """A ChatKit request body."""
    return json.dumps({"type": kind, "params": params}).encode()


def create_body(text: str) -> bytes:
    """threads.create with this message."""
    return request("threads.create", input=user_input(text))


def add(text: str, thread_id: str) -> bytes:
    """threads.add_user_message with this message."""
    return request("threads.add_user_message", thread_id=thread_id, input=user_input(text))


def parse_frame(chunk: bytes) -> dict[str, Any]:
    """One SSE frame of the server, `data: {...}\\n\\n`, as its JSON event."""
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n"), chunk[:80]
    event: dict[str, Any] = json.loads(chunk[len(b"data: ") :])
    return event


def parse_frames(chunk: bytes) -> list[dict[str, Any]]:
    """The events of one chunk: a reader that fell behind gets several frames at once."""
    assert chunk.endswith(b"\n\n"), chunk[-80:]
    return [parse_frame(frame + b"\n\n") for frame in chunk.split(b"\n\n") if frame]


def item_text(item: ThreadItem) -> str:
    """An assistant message's whole text."""
    assert isinstance(item, AssistantMessageItem)
    return "".join(part.text for part in item.content)


def deltas(events: list[dict[str, Any]]) -> list[str]:
    """The assistant text deltas in a stream, in order."""
    return [
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated"
        and e["update"]["type"] == "assistant_message.content_part.text_delta"
    ]


def done_items(events: list[dict[str, Any]], item_type: str) -> list[dict[str, Any]]:
    """The items of a given type that a stream finished."""
    return [
        e["item"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == item_type
    ]


def reply_text(events: list[dict[str, Any]]) -> str:
    """The text of the one assistant reply a successful turn streamed."""
    assert "error" not in [e["type"] for e in events], events[-1]
    (reply,) = done_items(events, "assistant_message")
    return "".join(part["text"] for part in reply["content"])


def tool_outputs(record: RecordedRequest) -> list[str]:
    """The tool results a model request carried, from the Responses or the Chat API."""
    if "messages" in record.body:
        return [m["content"] for m in record.body["messages"] if m["role"] == "tool"]
    return [i["output"] for i in record.body["input"] if i.get("type") == "function_call_output"]


def input_texts(record: RecordedRequest) -> list[str]:
    """Every message text a Responses request gave the model, in order."""
    texts = []
    for entry in record.body["input"]:
        content = entry.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part.get("text", "") for part in content)
    return texts


async def wait_done(record: RecordedRequest, seconds: float = 10.0) -> None:
    """Wait until the mock has finished (or abandoned) its reply to a request."""
    with anyio.fail_after(seconds):
        while not record.done:
            await anyio.sleep(0.01)


@dataclass
class Chat:
    """A server under test, with shortcuts for the requests the tests send."""

    server: TripPlannerServer
    store: SQLStore
    mock: OpenAIMock

    async def stream(self, body: bytes, context: RequestContext = ALICE) -> list[dict[str, Any]]:
        """Process a streaming request and read every event it sends."""
        result = await self.server.process(body, context)
        assert isinstance(result, StreamingResult)
        return [event async for chunk in result.json_events for event in parse_frames(chunk)]

    async def call(self, body: bytes, context: RequestContext = ALICE) -> Any:
        """Process a non-streaming request and return its JSON answer."""
        result = await self.server.process(body, context)
        assert isinstance(result, NonStreamingResult)
        return json.loads(result.json)

    async def create(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """Start a thread with a message; its id and the events."""
        events = await self.stream(request("threads.create", input=user_input(text)))
        assert events[0]["type"] == "thread.created"
        return events[0]["thread"]["id"], events

    async def send(self, thread_id: str, text: str) -> list[dict[str, Any]]:
        """Add a user message to a thread and read the reply's events."""
        return await self.stream(
            request("threads.add_user_message", thread_id=thread_id, input=user_input(text))
        )

    async def items(self, thread_id: str) -> list[ThreadItem]:
        """Every stored item of a thread, hidden ones included, oldest first."""
        page = await self.store.load_thread_items(thread_id, None, 100, "asc", ALICE)
        return page.data

    async def assistant_texts(self, thread_id: str) -> list[str]:
        """The stored assistant replies of a thread, oldest first."""
        return [
            item_text(i) for i in await self.items(thread_id) if isinstance(i, AssistantMessageItem)
        ]


async def close_model_client(agent: Agent[Any]) -> None:
    """Close the agent's OpenAI client on this test's loop.

    Left to the garbage collector, it would try to close itself on a later test's loop.
    """
    client = getattr(agent.model, "_client", None)
    if client is not None:
        await client.close()


@pytest.fixture
async def make_chat(store: SQLStore, openai_mock: OpenAIMock) -> AsyncIterator[Callable[..., Chat]]:
    """Build a server on the store and the scripted model with some settings changed."""
    made: list[Chat] = []

    def make(*, history_items: int = 40, max_streams_per_user: int = 10, **overrides: Any) -> Chat:
        settings = Settings(
            openai_base_url=openai_mock.base_url,
            openai_api_key="test",
            model_max_retries=0,
            tracing=False,
            **overrides,
        )
        configure_tracing(settings)
        agent = create_trip_planner_agent(settings)
        server = TripPlannerServer(
            store, agent, history_items=history_items, max_streams_per_user=max_streams_per_user
        )
        made.append(Chat(server, store, openai_mock))
        return made[-1]

    yield make
    for chat in made:
        await close_model_client(chat.server.agent)


@pytest.fixture
def chat(make_chat: Callable[..., Chat]) -> Chat:
    """A server with the default settings."""
    return make_chat()


def assert_error_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream ended in a retryable `error` event with a message for the user."""
    last = events[-1]
    assert last["type"] == "error", last
    assert last["allow_retry"] is True
    assert len(last.get("message", "")) > 10
    return last


# -- a first exchange -----------------------------------------------------------


async def test_threads_create_streams_in_order_and_persists_the_exchange(chat: Chat) -> None:
    thread_id, events = await chat.create("Plan a weekend in Porto [tokens 3]")

    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "thread.created",
        "thread.item.done",
        "stream_options",
        "thread.item.added",
    ]
    assert events[1]["item"]["type"] == "user_message"
    assert events[3]["item"]["type"] == "assistant_message"
    # Deltas already waiting may arrive merged (`tripchat.fastpath`); the text is exact.
    assert "".join(deltas(events)) == "w0 w1 w2 "
    assert kinds[-2:] == ["thread.item.done", "thread.updated"]
    assert events[-2]["item"]["id"] == events[3]["item"]["id"]
    assert events[-1]["thread"]["title"] == "Plan a weekend in Porto [tokens 3]"
    assert "error" not in kinds

    stored = await chat.items(thread_id)
    assert [type(i) for i in stored] == [UserMessageItem, AssistantMessageItem]
    assert item_text(stored[1]) == words(3)
    assert stored[1].id == events[3]["item"]["id"]
    thread = await chat.store.load_thread(thread_id, ALICE)
    assert thread.title == "Plan a weekend in Porto [tokens 3]"


async def test_the_title_is_set_once_from_the_first_message(chat: Chat) -> None:
    thread_id, _ = await chat.create(
        "First   message, quite a long one that goes on and on [tokens 1]"
    )
    events = await chat.send(thread_id, "second [tokens 1]")

    assert "thread.updated" not in [e["type"] for e in events]
    title = (await chat.store.load_thread(thread_id, ALICE)).title
    assert title is not None and title.startswith("First message, quite a long one")
    assert len(title) <= 49 and title.endswith("…")


# -- tools ---------------------------------------------------------------------


async def test_a_tool_call_is_shown_as_a_workflow_and_runs_the_real_tool(chat: Chat) -> None:
    thread_id, events = await chat.create(LISBON_CALL)

    workflows = done_items(events, "workflow")
    assert len(workflows) == 1
    tasks = workflows[0]["workflow"]["tasks"]
    assert len(tasks) == 1 and "Lisbon" in tasks[0]["title"]
    assert tasks[0]["status_indicator"] == "complete"
    task_updates = [
        e
        for e in events
        if e["type"] == "thread.item.updated" and e["item_id"] == workflows[0]["id"]
    ]
    assert task_updates and task_updates[-1]["update"]["task"]["status_indicator"] == "complete"

    first, second = chat.mock.requests
    assert tool_outputs(first) == []
    (output,) = tool_outputs(second)
    assert "Portugal" in output
    assert "Portugal" in (await chat.assistant_texts(thread_id))[0]


async def test_tool_calls_are_remembered_on_the_next_turn(chat: Chat) -> None:
    thread_id, _ = await chat.create(LISBON_CALL)
    chat.mock.reset()

    await chat.send(thread_id, "And the airports? [tokens 2]")

    (turn,) = chat.mock.requests
    kinds = [i.get("type") for i in turn.body["input"]]
    assert "function_call" in kinds and "function_call_output" in kinds
    assert kinds.index("function_call") < kinds.index("function_call_output")
    call = next(i for i in turn.body["input"] if i.get("type") == "function_call")
    output = next(i for i in turn.body["input"] if i.get("type") == "function_call_output")
    assert call["name"] == "find_destination" and json.loads(call["arguments"]) == {
        "name": "Lisbon"
    }
    assert output["call_id"] == call["call_id"] and "Portugal" in output["output"]


@pytest.mark.parametrize("chat_completions", [False, True], ids=["responses", "chat"])
async def test_two_tool_calls_in_one_step(
    make_chat: Callable[..., Chat], chat_completions: bool
) -> None:
    chat = make_chat(use_chat_completions=chat_completions)
    thread_id, events = await chat.create(
        '[call find_destination {"name": "Lisbon"}] [call find_destination {"name": "Porto"}] '
        "[tokens 1]"
    )

    (workflow,) = done_items(events, "workflow")
    titles = [t["title"] for t in workflow["workflow"]["tasks"]]
    assert len(titles) == 2 and "Lisbon" in titles[0] and "Porto" in titles[1]
    # Each task is announced once: in the workflow's first event or by a task.added after it.
    (added,) = [
        e["item"]
        for e in events
        if e["type"] == "thread.item.added" and e["item"]["type"] == "workflow"
    ]
    announced = [t["title"] for t in added["workflow"]["tasks"]] + [
        e["update"]["task"]["title"]
        for e in events
        if e["type"] == "thread.item.updated" and e["update"]["type"] == "workflow.task.added"
    ]
    assert announced == titles
    assert {t["status_indicator"] for t in workflow["workflow"]["tasks"]} == {"complete"}
    assert reply_text(await chat.send(thread_id, "next [tokens 1]")) == words(1)
    lisbon, porto = tool_outputs(chat.mock.requests[-1])
    assert "Portugal" in lisbon and '"Porto"' in porto


async def test_hidden_items_never_reach_the_client(chat: Chat) -> None:
    thread_id, events = await chat.create(LISBON_CALL)
    events += await chat.send(thread_id, "thanks [tokens 1]")

    stored_types = {i.type for i in await chat.items(thread_id)}
    assert "hidden_context_item" in stored_types  # kept for the model ...
    streamed = [e["item"]["type"] for e in events if "item" in e]
    assert not set(streamed) & set(HIDDEN_TYPES)  # ... never shown
    listed = await chat.call(request("items.list", thread_id=thread_id, limit=50))
    assert listed["data"] and not {i["type"] for i in listed["data"]} & set(HIDDEN_TYPES)
    thread = await chat.call(request("threads.get_by_id", thread_id=thread_id))
    assert thread["items"]["data"]
    assert not {i["type"] for i in thread["items"]["data"]} & set(HIDDEN_TYPES)


async def test_item_pages_are_full_pages_of_visible_items(chat: Chat) -> None:
    thread_id, _ = await chat.create(LISBON_CALL)
    await chat.send(thread_id, "thanks [tokens 1]")
    visible = [i.id for i in await chat.items(thread_id) if i.type not in HIDDEN_TYPES]

    seen, after = [], None
    for _ in range(len(visible) + 1):
        page = await chat.call(
            request("items.list", thread_id=thread_id, limit=1, order="asc", after=after)
        )
        assert len(page["data"]) == 1  # never a short or empty page
        seen.append(page["data"][0]["id"])
        if not page["has_more"]:
            break
        after = page["after"]
        assert after == seen[-1]  # the cursor is an item the client has seen
    assert seen == visible


# -- history -------------------------------------------------------------------


async def test_the_history_window_keeps_the_latest_items(make_chat: Callable[..., Chat]) -> None:
    chat = make_chat(history_items=4)
    thread_id, _ = await chat.create("turn 0 [tokens 1]")
    for turn in range(1, 5):
        await chat.send(thread_id, f"turn {turn} [tokens 1]")

    last = chat.mock.requests[-1]
    texts = input_texts(last)
    assert len(last.body["input"]) == 4
    assert texts[-1] == "turn 4 [tokens 1]"
    assert "turn 3 [tokens 1]" in texts
    assert not any(t.startswith(("turn 0", "turn 1", "turn 2")) for t in texts)


# -- Chat Completions ----------------------------------------------------------


async def test_chat_completions_turns_keep_real_distinct_ids(
    make_chat: Callable[..., Chat],
) -> None:
    chat = make_chat(use_chat_completions=True)
    thread_id, first = await chat.create("hello [tokens 2]")
    second = await chat.send(thread_id, "again [tokens 3]")

    assert [r.path for r in chat.mock.requests] == ["/v1/chat/completions"] * 2
    messages = chat.mock.requests[1].body["messages"]
    assert {"role": "assistant", "content": words(2)}.items() <= next(
        m for m in messages if m["role"] == "assistant"
    ).items()
    assert messages[-1]["role"] == "user"

    replies = [i for i in await chat.items(thread_id) if isinstance(i, AssistantMessageItem)]
    assert [item_text(r) for r in replies] == [words(2), words(3)]
    assert len({r.id for r in replies}) == 2
    ids = {r.id for r in replies} | {e["item"]["id"] for e in first + second if "item" in e}
    ids |= {e["item_id"] for e in first + second if "item_id" in e}
    assert not any("fake" in i for i in ids)


async def test_chat_completions_tool_calls_work(make_chat: Callable[..., Chat]) -> None:
    chat = make_chat(use_chat_completions=True)
    thread_id, events = await chat.create(LISBON_CALL)
    await chat.send(thread_id, "next [tokens 1]")

    assert "Lisbon" in done_items(events, "workflow")[0]["workflow"]["tasks"][0]["title"]
    assert "Portugal" in (await chat.assistant_texts(thread_id))[0]
    (output,) = tool_outputs(chat.mock.requests[-1])
    assert "Portugal" in output


# -- upstream failures ---------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500])
async def test_an_upstream_error_ends_in_a_retryable_error_event(chat: Chat, status: int) -> None:
    thread_id, events = await chat.create(f"plan it [error {status}]")

    assert_error_event(events)
    stored = await chat.items(thread_id)
    assert [type(i) for i in stored] == [UserMessageItem]
    assert reply_text(await chat.send(thread_id, "try again [tokens 2]")) == words(2)
    assert await chat.assistant_texts(thread_id) == [words(2)]


async def test_a_stalled_model_times_out_into_a_retryable_error(
    make_chat: Callable[..., Chat],
) -> None:
    chat = make_chat(model_timeout=1)
    with anyio.fail_after(10):
        thread_id, events = await chat.create("slow [stall 5]")

    assert_error_event(events)
    assert [type(i) for i in await chat.items(thread_id)] == [UserMessageItem]
    assert reply_text(await chat.send(thread_id, "again [tokens 1]")) == words(1)


async def test_a_failure_inside_the_stream_becomes_an_error_event(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(chat.store, "add_thread_item", broken)
    events = await chat.stream(request("threads.create", input=user_input("hi [tokens 1]")))

    assert events[0]["type"] == "thread.created"
    last = assert_error_event(events)
    assert "disk on fire" not in json.dumps(events)
    assert last["code"] == "custom"


# -- cancellation ----------------------------------------------------------------


async def _read_deltas(stream: AsyncIterator[bytes], count: int) -> str:
    """Read events until `count` text deltas arrived; the thread id."""
    thread_id, seen = "", 0
    while seen < count:
        events = parse_frames(await anext(stream))
        for event in events:
            if event["type"] == "thread.created":
                thread_id = event["thread"]["id"]
        seen += len(deltas(events))
    return thread_id


async def _close(stream: Any) -> str:
    """The client leaves: the SSE iterator is closed (as a dropped generator is)."""
    thread_id = await _read_deltas(stream, 5)
    await stream.aclose()
    return thread_id


async def _cancel(stream: Any) -> str:
    """The client leaves: the task reading the stream is cancelled, as Starlette does."""
    thread_id = ""
    with anyio.CancelScope() as scope:
        thread_id = await _read_deltas(stream, 5)
        scope.cancel()
        async for _ in stream:
            pytest.fail("the stream went on after its reader was cancelled")
    assert scope.cancelled_caught
    return thread_id


def _dropped_by_chatkit(context: dict[str, Any]) -> bool:
    """A report about a task chatkit's `_merge_generators` abandons when it is cancelled.

    It leaves its `__anext__` tasks behind: the run's ends in an unretrieved
    StopAsyncIteration, the event queue's stays pending. Log noise, nothing lost.
    """
    if isinstance(context.get("exception"), StopAsyncIteration):
        return True
    task = context.get("task")
    return task is not None and "_AsyncQueueIterator" in repr(task.get_coro())


@pytest.fixture
async def tolerate_chatkit_task_leaks() -> AsyncIterator[None]:
    """Let the loop drop (only) chatkit's abandoned-task reports, collected before the end."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _dropped_by_chatkit(context):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield
    gc.collect()
    await anyio.sleep(0)
    loop.set_exception_handler(previous)


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
@pytest.mark.parametrize("leave", [_close, _cancel], ids=["aclose", "cancel-scope"])
async def test_a_client_leaving_cancels_the_run_and_keeps_the_partial_reply(
    chat: Chat, leave: Callable[[Any], Any]
) -> None:
    result = await chat.server.process(
        request("threads.create", input=user_input("long one [tokens 200] [delay 0.02]")), ALICE
    )
    assert isinstance(result, StreamingResult)
    thread_id = await leave(result.json_events)

    # Saved by the time the stream is gone: nothing left running to do it later.
    stored = await chat.items(thread_id)
    replies = [i for i in stored if isinstance(i, AssistantMessageItem)]
    assert len(replies) == 1
    partial = item_text(replies[0])
    assert partial.strip() and words(200).startswith(partial) and partial != words(200)
    assert any(isinstance(i, SDKHiddenContextItem) for i in stored)

    (model_request,) = chat.mock.requests
    await wait_done(model_request)
    assert model_request.disconnected
    assert model_request.deltas_sent < 100

    assert reply_text(await chat.send(thread_id, "shorter please [tokens 2]")) == words(2)
    assert (await chat.assistant_texts(thread_id))[-1] == words(2)


class AgentsSeen(AgentHooks[Any]):
    """Records the agent object each run starts with."""

    def __init__(self) -> None:
        self.agents: list[Agent[Any]] = []

    async def on_start(self, context: RunContextWrapper[Any], agent: Agent[Any]) -> None:
        self.agents.append(agent)


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
async def test_replies_in_flight_at_once_each_run_their_own_agent(chat: Chat) -> None:
    """The Agents SDK compares every run of one agent object with every other at each
    run's start and end: shared by a thousand replies ending at once, that is seconds of
    CPU before their model calls close. Each reply runs its own copy (same tools)."""
    seen = AgentsSeen()
    chat.server.agent.hooks = seen
    held = "held [tokens 2] [delay 30]"
    results = [await start(chat, create_body(held), RequestContext(f"u{i}")) for i in range(3)]
    for result in results:
        await _read_deltas(result.json_events, 1)
    assert len({id(agent) for agent in seen.agents}) == 3
    assert all(agent is not chat.server.agent for agent in seen.agents)
    assert all(agent.tools is chat.server.agent.tools for agent in seen.agents)
    for result in results:
        await result.json_events.aclose()
    for record in chat.mock.requests:
        await wait_done(record)
        assert record.disconnected


LAGGING_REPLY = "long one [tokens 3000] [delay 0.001]"
"""A reply that takes at least 3 s, its events far more than a reader's buffer would hold."""
LAG_SECONDS = 1.0


async def _fall_behind(chat: Chat) -> tuple[StreamingResult, str]:
    """Start the lagging reply, read a little, then stop reading as a slow network does."""
    result = await chat.server.process(
        request("threads.create", input=user_input(LAGGING_REPLY)), ALICE
    )
    assert isinstance(result, StreamingResult)
    thread_id = await _read_deltas(result.json_events, 5)
    await anyio.sleep(LAG_SECONDS)
    return result, thread_id


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
async def test_a_reader_that_falls_behind_then_leaves_keeps_the_partial_reply(chat: Chat) -> None:
    result, thread_id = await _fall_behind(chat)
    # What piled up comes in one write, not one per event (a dead socket logs each write).
    backlog = parse_frames(await anext(result.json_events))
    assert len(backlog) > 50, len(backlog)
    with anyio.fail_after(10):
        await result.json_events.aclose()

    stored = await chat.items(thread_id)
    assert any(isinstance(i, SDKHiddenContextItem) for i in stored)
    (partial,) = await chat.assistant_texts(thread_id)
    assert partial.strip() and words(3000).startswith(partial) and partial != words(3000)
    (model_request,) = chat.mock.requests
    await wait_done(model_request)
    assert model_request.disconnected


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
async def test_a_reader_that_falls_behind_during_a_shutdown_gets_the_error_event(
    chat: Chat,
) -> None:
    result, thread_id = await _fall_behind(chat)
    with anyio.fail_after(10):
        await chat.server.drain(0)
        rest = [event async for chunk in result.json_events for event in parse_frames(chunk)]

    assert_error_event(rest)
    (partial,) = await chat.assistant_texts(thread_id)
    assert partial.strip() and words(3000).startswith(partial) and partial != words(3000)


async def _leave_then_drain(chat: Chat, stream: Any) -> None:
    """The client leaves; a shutdown comes while the partial reply is being saved."""
    async with anyio.create_task_group() as group:
        group.start_soon(stream.aclose)
        await anyio.sleep(0.1)
        await chat.server.drain(0)


async def _drain_then_leave(chat: Chat, stream: Any) -> None:
    """A shutdown stops the reply; the client leaves while it is being saved."""
    async with anyio.create_task_group() as group:
        group.start_soon(chat.server.drain, 0)
        await anyio.sleep(0.1)
        await stream.aclose()


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
@pytest.mark.parametrize(
    "race", [_leave_then_drain, _drain_then_leave], ids=["leave-drain", "drain-leave"]
)
async def test_a_second_cancellation_does_not_cut_the_save_short(
    chat: Chat, monkeypatch: pytest.MonkeyPatch, race: Callable[[Chat, Any], Any]
) -> None:
    result = await chat.server.process(
        request("threads.create", input=user_input("long one [tokens 200] [delay 0.02]")), ALICE
    )
    assert isinstance(result, StreamingResult)
    thread_id = await _read_deltas(result.json_events, 5)
    save = chat.store.add_thread_items

    async def slow_save(thread_id: str, items: list[ThreadItem], context: RequestContext) -> None:
        await anyio.sleep(0.3)  # long enough for the second cancellation to land mid-save
        await save(thread_id, items, context)

    monkeypatch.setattr(chat.store, "add_thread_items", slow_save)
    with anyio.fail_after(10):
        await race(chat, result.json_events)

    stored = await chat.items(thread_id)
    assert any(isinstance(i, SDKHiddenContextItem) for i in stored)
    assert len(await chat.assistant_texts(thread_id)) == 1


# -- one reply per thread, a few per user ------------------------------------------


async def start(chat: Chat, body: bytes, context: RequestContext = ALICE) -> StreamingResult:
    """Process a streaming request and start reading it: its reply is under way."""
    result = await chat.server.process(body, context)
    assert isinstance(result, StreamingResult)
    return result


async def read_all(result: StreamingResult) -> list[dict[str, Any]]:
    return [event async for chunk in result.json_events for event in parse_frames(chunk)]


async def test_a_second_message_waits_for_the_reply_in_its_thread(chat: Chat) -> None:
    """Two tabs: the second message is answered after the first reply, which it sees."""
    thread_id, _ = await chat.create("hello [tokens 1]")
    first = await start(chat, add("first [tokens 10] [delay 0.03]", thread_id))
    async with anyio.create_task_group() as group:
        group.start_soon(read_all, first)
        await anyio.sleep(0.05)
        second = await start(chat, add("second [tokens 2]", thread_id))  # waits for the first
        assert reply_text(await read_all(second)) == words(2)

    texts = [
        item_text(item) if isinstance(item, AssistantMessageItem) else item.content[0].text
        for item in await chat.items(thread_id)
        if isinstance(item, (AssistantMessageItem, UserMessageItem))
    ]
    assert texts[-4:] == [
        "first [tokens 10] [delay 0.03]",
        words(10),
        "second [tokens 2]",
        words(2),
    ]
    assert words(10).strip() in json.dumps(chat.mock.requests[-1].body)


async def test_a_retry_racing_a_new_message_leaves_no_orphan_reply(chat: Chat) -> None:
    thread_id, events = await chat.create("first [tokens 1]")
    first_message = done_items(events, "user_message")[0]["id"]
    running = await start(chat, add("second [tokens 10] [delay 0.03]", thread_id))
    async with anyio.create_task_group() as group:
        group.start_soon(read_all, running)
        await anyio.sleep(0.05)
        retry = await start(
            chat, request("threads.retry_after_item", thread_id=thread_id, item_id=first_message)
        )
        await read_all(retry)

    stored = [i for i in await chat.items(thread_id) if not isinstance(i, SDKHiddenContextItem)]
    assert [type(i).__name__ for i in stored] == ["UserMessageItem", "AssistantMessageItem"]


async def _long_reply_under_way(chat: Chat, deltas: int) -> tuple[str, StreamingResult]:
    """A thread whose second reply (4 s long) has streamed `deltas` words so far."""
    thread_id, _ = await chat.create("hello [tokens 1]")
    running = await start(chat, add("long [tokens 200] [delay 0.02]", thread_id))
    await _read_deltas(running.json_events, deltas)
    return thread_id, running


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
async def test_a_thread_busy_past_the_wait_is_409(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "THREAD_WAIT_SECONDS", 0.1)
    thread_id, running = await _long_reply_under_way(chat, 1)
    with pytest.raises(RequestError) as raised:
        await chat.server.process(add("me too", thread_id), ALICE)
    assert raised.value.status == 409
    await running.json_events.aclose()
    assert reply_text(await chat.send(thread_id, "now [tokens 2]")) == words(2)


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
async def test_a_user_past_the_stream_limit_gets_429_and_others_do_not(
    make_chat: Callable[..., Chat],
) -> None:
    chat = make_chat(max_streams_per_user=2)
    long_one = create_body("long [tokens 200] [delay 0.02]")
    running = [await start(chat, long_one), await start(chat, long_one)]
    for result in running:
        await _read_deltas(result.json_events, 1)
    with pytest.raises(RequestError) as raised:
        await chat.server.process(long_one, ALICE)
    assert raised.value.status == 429
    assert reply_text(await chat.stream(create_body("bob [tokens 2]"), BOB)) == words(2)
    await running[0].json_events.aclose()
    assert reply_text(await chat.stream(create_body("again [tokens 2]"))) == words(2)
    await running[1].json_events.aclose()


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
async def test_deleting_a_thread_stops_its_reply_and_tells_the_reader(
    chat: Chat, caplog: pytest.LogCaptureFixture
) -> None:
    thread_id, running = await _long_reply_under_way(chat, 2)
    with caplog.at_level(logging.WARNING):
        assert await chat.call(request("threads.delete", thread_id=thread_id)) == {}
        with anyio.fail_after(10):
            rest = await read_all(running)
    assert rest[-1]["type"] == "error" and rest[-1]["allow_retry"] is False
    assert "deleted" in rest[-1]["message"]
    model_request = chat.mock.requests[-1]
    await wait_done(model_request)
    assert model_request.disconnected and model_request.deltas_sent < 100
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    with pytest.raises(NotFoundError):
        await chat.store.load_thread(thread_id, ALICE)


@pytest.mark.usefixtures("tolerate_chatkit_task_leaks")
async def test_a_message_waiting_for_a_thread_that_gets_deleted_is_404(
    chat: Chat, caplog: pytest.LogCaptureFixture
) -> None:
    thread_id, running = await _long_reply_under_way(chat, 1)
    with caplog.at_level(logging.WARNING), anyio.fail_after(10):
        async with anyio.create_task_group() as group:

            async def second_tab() -> None:  # its message waits for the first reply
                with pytest.raises(NotFoundError):
                    await chat.server.process(add("me too", thread_id), ALICE)

            group.start_soon(second_tab)
            await anyio.sleep(0.2)
            await chat.call(request("threads.delete", thread_id=thread_id))
        await read_all(running)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_reply_whose_response_never_started_still_counts_and_completes(
    make_chat: Callable[..., Chat],
) -> None:
    """The client left before the response began (or its connection is stalled): the reply
    runs and is kept, and holds its place until it ends, so limits cannot be sidestepped."""
    chat = make_chat(max_streams_per_user=1)
    unread = await chat.server.process(create_body("unread [tokens 5] [delay 0.1]"), ALICE)
    assert isinstance(unread, StreamingResult)
    with pytest.raises(RequestError) as raised:
        await chat.server.process(create_body("another"), ALICE)
    assert raised.value.status == 429
    with anyio.fail_after(10):
        while chat.server.streams.live():
            await anyio.sleep(0.05)
    (thread,) = (await chat.store.load_threads(10, None, "asc", ALICE)).data
    assert await chat.assistant_texts(thread.id) == [words(5)]
    assert reply_text(await chat.stream(create_body("now [tokens 2]"))) == words(2)


async def test_a_rename_never_brings_a_deleted_thread_back(chat: Chat) -> None:
    thread_id, _ = await chat.create("hello [tokens 1]")
    thread = await chat.store.load_thread(thread_id, ALICE)
    await chat.call(request("threads.delete", thread_id=thread_id))
    thread.title = "renamed"
    with pytest.raises(NotFoundError):
        await chat.store.update_thread(thread, ALICE)
    with pytest.raises(NotFoundError):
        await chat.server.process(
            request("threads.update", thread_id=thread_id, title="renamed"), ALICE
        )
    with pytest.raises(NotFoundError):
        await chat.store.load_thread(thread_id, ALICE)


# -- retry -------------------------------------------------------------------------


async def test_retry_after_a_user_message_replaces_the_reply(chat: Chat) -> None:
    thread_id, events = await chat.create("first [tokens 2]")
    user_id = events[1]["item"]["id"]
    old_reply = done_items(events, "assistant_message")[0]["id"]

    retried = await chat.stream(
        request("threads.retry_after_item", thread_id=thread_id, item_id=user_id)
    )

    new_reply = done_items(retried, "assistant_message")[0]["id"]
    assert new_reply != old_reply
    stored = await chat.items(thread_id)
    assert [i.id for i in stored] == [user_id, new_reply]
    assert len(chat.mock.requests) == 2


async def test_retry_after_an_assistant_item_is_refused_before_streaming(chat: Chat) -> None:
    thread_id, events = await chat.create("first [tokens 2]")
    reply = done_items(events, "assistant_message")[0]["id"]

    with pytest.raises(RequestError) as raised:
        await chat.server.process(
            request("threads.retry_after_item", thread_id=thread_id, item_id=reply), ALICE
        )
    assert raised.value.status == 400
    assert len(await chat.items(thread_id)) == 2


# -- client tool output ---------------------------------------------------------------


async def _add_pending_call(chat: Chat, thread_id: str) -> ClientToolCallItem:
    """Store a pending client tool call followed by a hidden item, as tools leave them."""
    call = ClientToolCallItem(
        id="tc_pending",
        thread_id=thread_id,
        created_at=datetime.now(),
        call_id="call_client_1",
        name="get_location",
        arguments={"precision": "city"},
    )
    await chat.store.add_thread_item(thread_id, call, ALICE)
    hidden = HiddenContextItem(
        id="msg_hidden", thread_id=thread_id, created_at=datetime.now(), content="noted"
    )
    await chat.store.add_thread_item(thread_id, hidden, ALICE)
    return call


async def test_client_tool_output_completes_a_call_behind_hidden_items(chat: Chat) -> None:
    thread_id, _ = await chat.create("where am I? [tokens 1]")
    call = await _add_pending_call(chat, thread_id)
    chat.mock.reset()

    events = await chat.stream(
        request("threads.add_client_tool_output", thread_id=thread_id, result={"city": "Faro"})
    )

    assert events[-1]["type"] == "thread.item.done"
    assert events[-1]["item"]["type"] == "assistant_message"
    stored = await chat.store.load_item(thread_id, call.id, ALICE)
    assert isinstance(stored, ClientToolCallItem)
    assert stored.status == "completed" and stored.output == {"city": "Faro"}
    (turn,) = chat.mock.requests
    assert [json.loads(o) for o in tool_outputs(turn)] == [{"city": "Faro"}]


# -- non-streaming requests -----------------------------------------------------


async def test_feedback_is_persisted(chat: Chat) -> None:
    thread_id, events = await chat.create("hi [tokens 1]")
    reply = done_items(events, "assistant_message")[0]["id"]

    # The same id many times over is one item (within the per-request limit of 100).
    answer = await chat.call(
        request("items.feedback", thread_id=thread_id, item_ids=[reply] * 500, kind="positive")
    )

    assert answer == {}
    assert await chat.store.load_feedback(thread_id, ALICE) == {reply: "positive"}
    with pytest.raises(NotFoundError):
        await chat.server.process(
            request("items.feedback", thread_id=thread_id, item_ids=["msg_nope"], kind="negative"),
            ALICE,
        )
    assert await chat.store.load_feedback(thread_id, ALICE) == {reply: "positive"}


async def test_thread_requests(chat: Chat) -> None:
    first, _ = await chat.create("one [tokens 1]")
    second, _ = await chat.create("two [tokens 1]")

    listed = await chat.call(request("threads.list", limit=10))
    assert [t["id"] for t in listed["data"]] == [second, first]
    page = await chat.call(request("threads.list", limit=1, order="asc"))
    assert [t["id"] for t in page["data"]] == [first] and page["has_more"]
    rest = await chat.call(request("threads.list", limit=5, order="asc", after=page["after"]))
    assert [t["id"] for t in rest["data"]] == [second]

    updated = await chat.call(request("threads.update", thread_id=first, title="Porto trip"))
    assert updated["title"] == "Porto trip"
    got = await chat.call(request("threads.get_by_id", thread_id=first))
    assert got["title"] == "Porto trip"
    assert [i["type"] for i in got["items"]["data"]] == ["user_message", "assistant_message"]

    items = await chat.call(request("items.list", thread_id=first, limit=1, order="asc"))
    assert [i["type"] for i in items["data"]] == ["user_message"] and items["has_more"]

    assert await chat.call(request("threads.delete", thread_id=first)) == {}
    with pytest.raises(NotFoundError):
        await chat.server.process(request("threads.get_by_id", thread_id=first), ALICE)
    listed = await chat.call(request("threads.list"))
    assert [t["id"] for t in listed["data"]] == [second]


async def test_threads_are_private_to_their_user(chat: Chat) -> None:
    thread_id, _ = await chat.create("mine [tokens 1]")
    bob = RequestContext("bob")

    assert (await chat.call(request("threads.list"), bob))["data"] == []
    for body in (
        request("threads.get_by_id", thread_id=thread_id),
        request("items.list", thread_id=thread_id),
        request("threads.delete", thread_id=thread_id),
        request("threads.add_user_message", thread_id=thread_id, input=user_input("hi")),
    ):
        with pytest.raises(NotFoundError):
            await chat.server.process(body, bob)


# -- checks before any streaming --------------------------------------------------


@pytest.fixture
async def thread_id(chat: Chat) -> str:
    """A thread with one finished exchange."""
    created, _ = await chat.create("hello [tokens 1]")
    chat.mock.reset()
    return created


BAD_REQUESTS: dict[str, tuple[type[Exception], Callable[[str], bytes]]] = {
    "message to unknown thread": (
        NotFoundError,
        lambda t: request("threads.add_user_message", thread_id="thr_nope", input=user_input("x")),
    ),
    "retry unknown item": (
        NotFoundError,
        lambda t: request("threads.retry_after_item", thread_id=t, item_id="msg_nope"),
    ),
    "retry in unknown thread": (
        NotFoundError,
        lambda t: request("threads.retry_after_item", thread_id="thr_nope", item_id="msg_nope"),
    ),
    "tool output with none pending": (
        RequestError,
        lambda t: request("threads.add_client_tool_output", thread_id=t, result={}),
    ),
    "unknown attachment on create": (
        NotFoundError,
        lambda t: request("threads.create", input=user_input("x", ["atc_1"])),
    ),
    "unknown attachment on message": (
        NotFoundError,
        lambda t: request(
            "threads.add_user_message", thread_id=t, input=user_input("x", ["atc_1"])
        ),
    ),
    "negative threads limit": (RequestError, lambda t: request("threads.list", limit=-1)),
    "zero items limit": (RequestError, lambda t: request("items.list", thread_id=t, limit=0)),
    "list after unknown thread": (
        NotFoundError,
        lambda t: request("threads.list", after="thr_nope"),
    ),
    "items of unknown thread": (
        NotFoundError,
        lambda t: request("items.list", thread_id="thr_nope"),
    ),
    "update unknown thread": (
        NotFoundError,
        lambda t: request("threads.update", thread_id="thr_nope", title="x"),
    ),
    "overlong title": (
        RequestError,
        lambda t: request("threads.update", thread_id=t, title="x" * 201),
    ),
    "delete unknown thread": (
        NotFoundError,
        lambda t: request("threads.delete", thread_id="thr_nope"),
    ),
    "feedback in unknown thread": (
        NotFoundError,
        lambda t: request("items.feedback", thread_id="thr_nope", item_ids=[], kind="positive"),
    ),
    "feedback on too many items": (
        RequestError,
        lambda t: request(
            "items.feedback",
            thread_id=t,
            item_ids=[f"msg_{i}" for i in range(101)],
            kind="positive",
        ),
    ),
    "overlong message": (
        RequestError,
        lambda t: request("threads.add_user_message", thread_id=t, input=user_input("x" * 32_001)),
    ),
    "overlong first message": (
        RequestError,
        lambda t: request("threads.create", input=user_input("x " * 16_001)),
    ),
    "not json": (RequestError, lambda t: b"{nope"),
    "unknown type": (RequestError, lambda t: request("threads.explode")),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_requests_raise_before_any_stream(chat: Chat, thread_id: str, case: str) -> None:
    error, body = BAD_REQUESTS[case]
    before = await chat.items(thread_id)

    with pytest.raises(error) as raised:
        await chat.server.process(body(thread_id), ALICE)

    if isinstance(raised.value, RequestError):
        assert raised.value.status == 400 and raised.value.message
    assert chat.mock.requests == []
    assert await chat.items(thread_id) == before


async def test_a_draining_server_refuses_new_streams(chat: Chat, thread_id: str) -> None:
    await chat.server.drain(0)

    with pytest.raises(RequestError) as raised:
        await chat.server.process(
            request("threads.add_user_message", thread_id=thread_id, input=user_input("x")), ALICE
        )
    assert raised.value.status == 503
    assert (await chat.call(request("threads.get_by_id", thread_id=thread_id)))["id"] == thread_id
