"""Widget actions, forms, the client tool, sources and history over HTTP, and what a client
gets for bad input: a 4xx before any stream, never a 500, never a change to another thread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chatkit.types import (
    AssistantMessageItem,
    ClientToolCallItem,
    StructuredInputItem,
    ThreadItemReplacedEvent,
    URLSource,
    WidgetItem,
)
from openai_mock import OpenAIMock
from test_asgi import error_message
from test_server import request, user_input
from test_widgets import (
    SHOW_PLAN,
    Chat,
    call,
    done,
    effects,
    open_chat,
    settings_for,
    show_itinerary,
    texts,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def chat(db_url: str, openai_mock: OpenAIMock) -> AsyncIterator[Chat]:
    """The app on each database and the scripted model, with a client on it."""
    async for opened in open_chat(settings_for(db_url, openai_mock), openai_mock):
        yield opened


ASK = call("ask_traveller", {"questions": ["pace", "budget", "dates"]})


def action_body(kind: str, thread_id: str, item_id: str | None, type_: Any, payload: Any) -> bytes:
    return request(
        kind, thread_id=thread_id, item_id=item_id, action={"type": type_, "payload": payload}
    )


# -- the preferences form ------------------------------------------------------------------


async def test_the_preferences_form_reaches_the_agent(chat: Chat) -> None:
    shown = await chat.events(
        request("threads.create", input=user_input("My style " + call("show_preferences_form")))
    )
    [form] = done(shown, WidgetItem)
    assert '"asForm":true' in texts(form) and "preferences.submit" in texts(form)
    assert not done(shown, AssistantMessageItem)  # the turn ends with the form

    payload = {"pace": "relaxed", "budget": "luxury", "interests": f"food {SHOW_PLAN}"}
    submitted = await chat.action(form.thread_id, form.id, "preferences.submit", payload)
    [summary] = [e.item for e in submitted if isinstance(e, ThreadItemReplacedEvent)]
    assert isinstance(summary, WidgetItem) and summary.id == form.id
    assert "Pace: relaxed. Budget: luxury." in texts(summary)
    assert "asForm" not in texts(summary)
    assert "Pace: relaxed. Budget: luxury." in json.dumps(chat.mock.requests[1].body)
    [itinerary] = done(submitted, WidgetItem)  # the agent planned with them
    assert [e.name for e in effects(submitted)] == ["itinerary_updated"]
    items = (await chat.thread(form.thread_id)).items.data
    assert [i.id for i in items if i.type == "widget"] == [form.id, itinerary.id]
    assert items[1] == summary


# -- the client tool -----------------------------------------------------------------------


async def test_the_location_comes_from_the_browser(chat: Chat) -> None:
    asked = await chat.events(
        request("threads.create", input=user_input("From here " + call("get_traveller_location")))
    )
    [pending] = done(asked, ClientToolCallItem)
    assert (pending.name, pending.status) == ("get_traveller_location", "pending")
    assert not done(asked, AssistantMessageItem)

    location = {"latitude": 38.72, "longitude": -9.14}
    resumed = await chat.events(
        request("threads.add_client_tool_output", thread_id=pending.thread_id, result=location)
    )
    [reply] = done(resumed, AssistantMessageItem)
    assert "38.72" in reply.content[0].text  # the model got the browser's answer
    sent = chat.mock.requests[-1].body["input"]
    assert [i.get("type") for i in sent[-2:]] == ["function_call", "function_call_output"]


# -- sources ---------------------------------------------------------------------------------


async def test_facts_from_the_data_tools_are_listed_as_sources(chat: Chat) -> None:
    holidays = call(
        "public_holidays", {"country": "PT", "start": "2026-04-20", "end": "2026-04-30"}
    )
    events = await chat.events(request("threads.create", input=user_input(f"Lisbon {holidays}")))
    [reply] = done(events, AssistantMessageItem)
    sources = [a.source for a in reply.content[-1].annotations]
    assert len(sources) == 1 and isinstance(sources[0], URLSource)
    assert sources[0].title == "Public holidays in Portugal, 20–30 Apr 2026"
    assert sources[0].url == "https://github.com/vacanza/holidays"
    reloaded = (await chat.thread(reply.thread_id)).items.data[-1]
    assert reloaded == reply


async def test_a_failed_tool_call_is_no_source(chat: Chat) -> None:
    bad = call(
        "public_holidays", {"country": "Atlantis", "start": "2026-04-20", "end": "2026-04-30"}
    )
    events = await chat.events(request("threads.create", input=user_input(bad)))
    [reply] = done(events, AssistantMessageItem)
    assert reply.content[-1].annotations == []


# -- history on later turns, on both model APIs ---------------------------------------------


@pytest.fixture(params=["responses", "chat_completions"])
async def any_api_chat(
    request: pytest.FixtureRequest, openai_mock: OpenAIMock, tmp_path: Any
) -> AsyncIterator[Chat]:
    settings = settings_for(
        f"sqlite:///{tmp_path}/t.db",
        openai_mock,
        use_chat_completions=request.param == "chat_completions",
    )
    async for opened in open_chat(settings, openai_mock):
        yield opened


async def test_later_turns_see_widgets_actions_and_answers(any_api_chat: Chat) -> None:
    chat = any_api_chat
    [question] = done(
        await chat.events(request("threads.create", input=user_input(f"Lisbon {ASK}"))),
        StructuredInputItem,
    )
    thread_id = question.thread_id
    answers = {"pace": {"values": ["packed"]}, "dates": {"values": [f"May {SHOW_PLAN}"]}}
    body = request(
        "threads.add_structured_input",
        thread_id=thread_id,
        item_id=question.id,
        input={"answers": answers},
    )
    [widget] = done(await chat.events(body), WidgetItem)
    await chat.sync(thread_id, widget.id, "itinerary.toggle_booked", {"day": 2, "slot": "morning"})
    await chat.action(thread_id, widget.id, "itinerary.more_relaxed", {"day": 0})
    await chat.events(
        request(
            "threads.add_user_message", thread_id=thread_id, input=user_input("thanks [tokens 1]")
        )
    )

    sent = chat.model_input()
    assert "What pace suits you?: packed" in sent and "What is your budget?: skipped" in sent
    assert "Shown to the traveller as a card" in sent and "Morning: Belém (booked)" in sent
    assert 'pressed \\"Make it more relaxed\\" on day 1 (Friday 2026-05-01)' in sent
    assert '"type": "widget"' not in sent and "Card" not in sent  # text, not the tree


# -- bad input ---------------------------------------------------------------------------------


@pytest.fixture
async def shown(chat: Chat) -> tuple[str, WidgetItem]:
    return await show_itinerary(chat)


@pytest.mark.parametrize("kind", ["threads.custom_action", "threads.sync_custom_action"])
@pytest.mark.parametrize(
    "type_, payload, needle",
    [
        ("itinerary.explode", {}, "unknown action type"),
        (None, {}, "action"),
        ("itinerary.toggle_booked", {"day": "x", "slot": "evening"}, "day"),
        ("itinerary.toggle_booked", {"day": -1, "slot": "evening"}, "day"),
        ("itinerary.toggle_booked", {"day": 7, "slot": "evening"}, "no day 7"),
        ("itinerary.toggle_booked", {"day": 0, "slot": "night"}, "slot"),
        ("itinerary.toggle_booked", "day 0", "payload"),
    ],
)
async def test_bad_actions_are_400_and_change_nothing(
    chat: Chat, shown: tuple[str, WidgetItem], kind: str, type_: Any, payload: Any, needle: str
) -> None:
    thread_id, widget = shown
    response = await chat.client.post(action_body(kind, thread_id, widget.id, type_, payload))
    assert needle in error_message(response, 400)
    assert (await chat.thread(thread_id)).items.data[1] == widget


async def test_a_streaming_action_is_refused_as_a_sync_one(
    chat: Chat, shown: tuple[str, WidgetItem]
) -> None:
    thread_id, widget = shown
    body = action_body(
        "threads.sync_custom_action", thread_id, widget.id, "itinerary.rework_day", {"day": 0}
    )
    assert "threads.custom_action" in error_message(await chat.client.post(body), 400)


async def test_the_sender_must_be_this_threads_itinerary(
    chat: Chat, shown: tuple[str, WidgetItem]
) -> None:
    thread_id, widget = shown
    other_thread, other_widget = await show_itinerary(chat)
    user_item = (await chat.thread(thread_id)).items.data[0].id
    toggle = {"day": 0, "slot": "morning"}
    for item_id, status in ((user_item, 400), (None, 400), (other_widget.id, 404), ("msg_x", 404)):
        for kind in ("threads.custom_action", "threads.sync_custom_action"):
            body = action_body(kind, thread_id, item_id, "itinerary.toggle_booked", toggle)
            error_message(await chat.client.post(body), status)
    # A preferences answer cannot replace the itinerary card either.
    prefs = {"pace": "relaxed", "budget": "moderate"}
    body = action_body("threads.custom_action", thread_id, widget.id, "preferences.submit", prefs)
    assert "not a preferences form" in error_message(await chat.client.post(body), 400)
    assert (await chat.thread(thread_id)).items.data[1] == widget
    assert (await chat.thread(other_thread)).items.data[1] == other_widget


async def test_another_users_thread_is_404_and_untouched(
    chat: Chat, shown: tuple[str, WidgetItem]
) -> None:
    thread_id, widget = shown
    toggle = {"day": 0, "slot": "morning"}
    for kind in ("threads.custom_action", "threads.sync_custom_action"):
        body = action_body(kind, thread_id, widget.id, "itinerary.toggle_booked", toggle)
        error_message(await chat.client.post(body, user="bob"), 404)
    assert (await chat.thread(thread_id)).items.data[1] == widget
    assert len(chat.mock.requests) == 2  # bob's requests never reached the model


async def test_a_toggle_as_a_streamed_action_replaces_the_card(
    chat: Chat, shown: tuple[str, WidgetItem]
) -> None:
    thread_id, widget = shown
    events = await chat.action(
        thread_id, widget.id, "itinerary.toggle_booked", {"day": 1, "slot": "afternoon"}
    )
    [replaced] = [e.item for e in events if isinstance(e, ThreadItemReplacedEvent)]
    assert isinstance(replaced, WidgetItem) and replaced.copy_text is not None
    assert "Afternoon: Quinta da Regaleira (booked)" in replaced.copy_text
    assert (await chat.thread(thread_id)).items.data[1] == replaced


async def test_structured_answers_are_checked(chat: Chat) -> None:
    [question] = done(
        await chat.events(request("threads.create", input=user_input(f"Lisbon {ASK}"))),
        StructuredInputItem,
    )
    thread_id = question.thread_id

    def answer(item_id: str, answers: dict[str, Any]) -> bytes:
        return request(
            "threads.add_structured_input",
            thread_id=thread_id,
            item_id=item_id,
            input={"answers": answers},
        )

    user_item = (await chat.thread(thread_id)).items.data[0].id
    assert "not a structured question" in error_message(
        await chat.client.post(answer(user_item, {})), 400
    )
    error_message(await chat.client.post(answer(question.id, {}), user="bob"), 404)
    too_long = {"dates": {"values": ["x" * 2001]}}
    error_message(await chat.client.post(answer(question.id, too_long)), 400)

    skipped = await chat.events(answer(question.id, {"pace": {"skipped": True}}))
    [replaced] = [e.item for e in skipped if isinstance(e, ThreadItemReplacedEvent)]
    assert isinstance(replaced, StructuredInputItem)
    assert all(q.answer is not None and q.answer.skipped for q in replaced.inputs)
    assert "was already answered" in error_message(
        await chat.client.post(answer(question.id, {})), 409
    )
