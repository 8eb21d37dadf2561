"""A model failure mid-reply keeps what the user already saw, in-process on both model APIs.

The stream ends with the text so far finished (`thread.item.done`) and then the retryable
`error` event; a reload shows the partial reply; the next turn's model input carries it and
a hidden note that it was cut off. Failures before any text are `test_server`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import anyio
import pytest
from chatkit.types import AssistantMessageItem, SDKHiddenContextItem, UserMessageItem, WorkflowItem
from test_server import (
    Chat,
    assert_error_event,
    chat,
    deltas,
    done_items,
    make_chat,
    reply_text,
    request,
    words,
)

from tripchat.partial import FAILED_NOTE

pytestmark = pytest.mark.anyio
__all__ = ["chat", "make_chat"]  # the fixtures, shared with test_server

MID_REPLY_FAULTS = {
    "cut": ("[tokens 6] [delay 0.2] [cut-after 3]", "could not reach"),
    "stall": ("[tokens 3] [stall 5]", "took too long"),
    "failed-event": ("[tokens 6] [delay 0.2] [fail-after 3]", "failed to answer"),
}
"""Each way a model call dies after three text deltas, and what the user is told. The
Agents SDK drops the deltas still queued when the call fails (they were never shown, so
they are not kept): the pauses give the reply time to show them first."""
CALENDAR_CALL = '[call trip_calendar {"start": "2027-05-01", "nights": 3}]'
"""A tool step that needs no data set loaded."""
API = pytest.mark.parametrize("chat_completions", [False, True], ids=["responses", "chat"])


def assert_logged_as_upstream_fault(caplog: pytest.LogCaptureFixture, thread_id: str) -> None:
    """A warning names the thread; nothing at ERROR but the Agents SDK's own line, which the
    served app drops (`bridge.ignore_sdk_leftovers`; `test_reliability` reads a real log)."""
    warned = [r for r in caplog.records if r.name == "tripchat.bridge"]
    assert [r.levelno for r in warned] == [logging.WARNING]
    assert thread_id in warned[0].getMessage()
    errors = [
        (r.name, r.getMessage())
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and not (r.name == "openai.agents" and r.getMessage().startswith("Error streaming"))
    ]
    assert errors == []


def texts_sent(chat: Chat) -> str:
    """The last model request's body as JSON text, to find what it carried and in what order."""
    return json.dumps(chat.mock.requests[-1].body)


@API
@pytest.mark.parametrize("case", MID_REPLY_FAULTS)
async def test_a_model_failure_mid_reply_keeps_what_was_streamed(
    make_chat: Callable[..., Chat],
    caplog: pytest.LogCaptureFixture,
    chat_completions: bool,
    case: str,
) -> None:
    directive, message = MID_REPLY_FAULTS[case]
    chat = make_chat(use_chat_completions=chat_completions, model_timeout=1)
    thread_id, _ = await chat.create("hello [tokens 1]")
    with caplog.at_level(logging.WARNING), anyio.fail_after(10):
        events = await chat.send(thread_id, f"plan it {directive}")

    error = assert_error_event(events)
    assert message in error["message"]
    shown = "".join(deltas(events))
    assert shown.strip() and words(3).startswith(shown), shown
    (done,) = done_items(events, "assistant_message")
    assert events[-2] == {"type": "thread.item.done", "item": done}  # finished, then the error
    assert "".join(part["text"] for part in done["content"]) == shown
    assert_logged_as_upstream_fault(caplog, thread_id)

    thread = await chat.call(request("threads.get_by_id", thread_id=thread_id))
    visible = [(i["type"], i["id"]) for i in thread["items"]["data"]]
    assert [kind for kind, _ in visible] == ["user_message", "assistant_message"] * 2
    assert visible[-1][1] == done["id"]
    user, partial, note = (await chat.items(thread_id))[-3:]
    assert isinstance(user, UserMessageItem) and isinstance(partial, AssistantMessageItem)
    assert isinstance(note, SDKHiddenContextItem) and note.content == FAILED_NOTE

    assert reply_text(await chat.send(thread_id, "go on [tokens 2]")) == words(2)
    sent = texts_sent(chat)
    assert sent.index(shown) < sent.index(FAILED_NOTE) < sent.index("go on [tokens 2]")
    assert await chat.assistant_texts(thread_id) == [words(1), shown, words(2)]


@API
async def test_a_tool_step_shown_before_a_failure_is_kept(
    make_chat: Callable[..., Chat], chat_completions: bool
) -> None:
    """The answer after the tool step is cut before any text (Chat Completions) or after
    some (Responses, which opens the message before its first delta): either way the
    workflow the user saw is kept, finished, with the tool's call and result for the model."""
    chat = make_chat(use_chat_completions=chat_completions)
    cut = "[cut-after 0]" if chat_completions else "[delay 0.2] [cut-after 2]"
    with anyio.fail_after(10):
        thread_id, events = await chat.create(f"{CALENDAR_CALL} {cut}")

    assert "could not reach" in assert_error_event(events)["message"]
    (workflow,) = done_items(events, "workflow")
    assert workflow["workflow"]["tasks"][0]["title"].startswith("Trip calendar")
    assert workflow["workflow"]["expanded"] is False and workflow["workflow"]["summary"]
    shown = "".join(deltas(events))
    assert [reply["content"][0]["text"] for reply in done_items(events, "assistant_message")] == (
        [shown] if shown else []
    )

    thread = await chat.call(request("threads.get_by_id", thread_id=thread_id))
    visible = [i["type"] for i in thread["items"]["data"]]
    assert visible == ["user_message", "workflow", *(["assistant_message"] if shown else [])]
    stored = await chat.items(thread_id)
    assert any(isinstance(i, WorkflowItem) for i in stored)
    assert isinstance(stored[-1], SDKHiddenContextItem) and stored[-1].content == FAILED_NOTE

    assert reply_text(await chat.send(thread_id, "go on [tokens 1]")) == words(1)
    sent = texts_sent(chat)
    assert "check_out" in sent  # the tool's result, replayed
    assert sent.index(FAILED_NOTE) < sent.index("go on [tokens 1]")


async def test_a_stream_cut_before_any_text_keeps_only_the_user_message(
    make_chat: Callable[..., Chat],
) -> None:
    """Nothing was shown (the Responses message opened, empty): nothing is kept but the
    user's message, as for an error status."""
    chat = make_chat()
    thread_id, events = await chat.create("plan it [tokens 4] [cut-after 0]")

    assert_error_event(events)
    assert deltas(events) == [] and done_items(events, "assistant_message") == []
    assert [type(i) for i in await chat.items(thread_id)] == [UserMessageItem]


async def test_a_tool_the_model_made_up_is_a_retryable_error_logged_with_its_traceback(
    chat: Chat, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an API failure but the run's own check (the Agents SDK raises the same error
    type as for a failed stream): the user can retry, and the log keeps the traceback."""
    with caplog.at_level(logging.WARNING), anyio.fail_after(10):
        thread_id, events = await chat.create("[call book_a_flight {}]")
    assert "failed to answer" in assert_error_event(events)["message"]
    (warned,) = [r for r in caplog.records if r.name == "tripchat.bridge"]
    assert warned.levelno == logging.WARNING and thread_id in warned.getMessage()
    assert warned.exc_info is not None and "book_a_flight" in str(warned.exc_info[1])
