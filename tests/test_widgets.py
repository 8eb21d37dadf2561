"""The itinerary widget over HTTP: the scripted conversation from first message to calendar
file on both databases, the widget's reload, its sync and streamed actions, and the file's
signed URL.

The scripted model calls the ChatKit tools (`[call show_itinerary {...}]`); every event and
JSON reply is validated with chatkit's own types.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import httpx
import icalendar
import pytest
from chatkit.types import (
    AssistantMessageItem,
    ClientEffectEvent,
    StructuredInputItem,
    SyncCustomActionResponse,
    Thread,
    ThreadItemDoneEvent,
    ThreadItemReplacedEvent,
    ThreadStreamEvent,
    WidgetItem,
)
from conftest import empty_postgres
from openai_mock import OpenAIMock
from pydantic import TypeAdapter
from test_asgi import Client
from test_server import close_model_client, request, user_input

from tripchat.asgi import create_app
from tripchat.config import Settings

pytestmark = pytest.mark.anyio

EVENT: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)
PLAN = {
    "destination": "Lisbon, Portugal",
    "start": "2026-05-01",
    "days": [
        {"morning": "Alfama walk", "afternoon": "Tram 28", "evening": "Fado dinner", "travel": ""},
        {
            "morning": "Sintra palaces",
            "afternoon": "Quinta da Regaleira",
            "evening": "Back to Lisbon",
            "travel": "Train from Rossio, 40 min",
        },
        {"morning": "Belém", "afternoon": "MAAT", "evening": "LX Factory", "travel": ""},
    ],
    "notes": ["Airport: LIS, metro red line to the centre"],
}
SHOW_PLAN = f"[call show_itinerary {json.dumps(PLAN)}]"


def call(name: str, arguments: dict[str, Any] | None = None) -> str:
    """A scripted tool call directive."""
    return f"[call {name} {json.dumps(arguments or {})}]"


@dataclass
class Chat:
    """A client on the app, with the ChatKit requests this feature adds."""

    client: Client
    mock: OpenAIMock

    async def events(self, body: bytes, user: str = "alice") -> list[ThreadStreamEvent]:
        """A streamed reply, every event validated; none of them an error."""
        events = [EVENT.validate_python(e) for e in await self.client.stream(body, user)]
        errors = [e for e in events if e.type == "error"]
        assert not errors, errors
        return events

    async def action(
        self, thread_id: str, item_id: str | None, kind: str, payload: Any, user: str = "alice"
    ) -> list[ThreadStreamEvent]:
        return await self.events(
            request(
                "threads.custom_action",
                thread_id=thread_id,
                item_id=item_id,
                action={"type": kind, "payload": payload},
            ),
            user,
        )

    async def sync(
        self, thread_id: str, item_id: str | None, kind: str, payload: Any
    ) -> SyncCustomActionResponse:
        body = request(
            "threads.sync_custom_action",
            thread_id=thread_id,
            item_id=item_id,
            action={"type": kind, "payload": payload},
        )
        return SyncCustomActionResponse.model_validate(await self.client.json(body))

    async def thread(self, thread_id: str, user: str = "alice") -> Thread:
        return Thread.model_validate(
            await self.client.json(request("threads.get_by_id", thread_id=thread_id), user)
        )

    def model_input(self) -> str:
        """What the model was sent last, as text."""
        return json.dumps(self.mock.requests[-1].body, ensure_ascii=False)


def done(events: list[ThreadStreamEvent], kind: type[Any]) -> list[Any]:
    """The items of this type the stream finished."""
    return [
        e.item for e in events if isinstance(e, ThreadItemDoneEvent) and isinstance(e.item, kind)
    ]


def effects(events: list[ThreadStreamEvent]) -> list[ClientEffectEvent]:
    return [e for e in events if isinstance(e, ClientEffectEvent)]


def texts(widget: WidgetItem) -> str:
    """Every string in a widget's tree, to look for what it shows."""
    return widget.widget.model_dump_json()


def settings_for(db_url: str, mock: OpenAIMock, **overrides: Any) -> Settings:
    return Settings(
        db_url=db_url,
        openai_base_url=mock.base_url,
        openai_api_key="test",
        model_max_retries=0,
        tracing=False,
        **overrides,
    )


async def open_chat(settings: Settings, mock: OpenAIMock) -> AsyncIterator[Chat]:
    if not settings.db_url.startswith("sqlite:"):
        await empty_postgres(settings.db_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield Chat(Client(http, app), mock)
        finally:
            await close_model_client(app.state.server.agent)


@pytest.fixture
async def chat(db_url: str, openai_mock: OpenAIMock) -> AsyncIterator[Chat]:
    """The app on each database and the scripted model, with a client on it."""
    async for opened in open_chat(settings_for(db_url, openai_mock), openai_mock):
        yield opened


async def show_itinerary(chat: Chat, plan_call: str = SHOW_PLAN) -> tuple[str, WidgetItem]:
    """A thread whose first reply shows the itinerary; its id and the widget."""
    events = await chat.events(request("threads.create", input=user_input(f"Lisbon {plan_call}")))
    [widget] = done(events, WidgetItem)
    return widget.thread_id, widget


# -- the scripted conversation ------------------------------------------------------------


async def test_the_whole_conversation(chat: Chat) -> None:
    # 1. The first message lacks the essentials: the agent asks, and its turn ends there.
    asked = await chat.events(
        request(
            "threads.create",
            input=user_input(
                "A trip to Lisbon please "
                + call("ask_traveller", {"questions": ["pace", "budget", "dates"]})
            ),
        )
    )
    [question] = done(asked, StructuredInputItem)
    assert question.status == "pending"
    assert [q.id for q in question.inputs] == ["pace", "budget", "dates"]
    assert [q.type for q in question.inputs] == ["multiple_choice", "multiple_choice", "freeform"]
    assert not done(asked, AssistantMessageItem)
    thread_id = question.thread_id

    # 2. The answers (budget skipped) resume the agent, which sees them and shows the plan.
    answered = await chat.events(
        request(
            "threads.add_structured_input",
            thread_id=thread_id,
            item_id=question.id,
            input={
                "status": "answered",
                "answers": {
                    "pace": {"values": ["relaxed"]},
                    "budget": {"skipped": True},
                    "dates": {"values": [f"1 to 3 May 2026 {SHOW_PLAN}"]},
                },
            },
        )
    )
    replaced = [e.item for e in answered if isinstance(e, ThreadItemReplacedEvent)]
    assert isinstance(replaced[0], StructuredInputItem) and replaced[0].status == "answered"
    answers = {q.id: q.answer for q in replaced[0].inputs}
    assert answers["pace"] is not None and answers["pace"].values == ["relaxed"]
    assert answers["budget"] is not None and answers["budget"].skipped
    assert (
        "What pace suits you?: relaxed"
        in chat.mock.requests[-2].body["input"][-1]["content"][0]["text"]
    )
    assert "What is your budget?: skipped" in json.dumps(chat.mock.requests[-2].body)

    # 3. The itinerary card: dates and weekdays from the calendar, a copy text, an effect.
    [widget] = done(answered, WidgetItem)
    assert "Friday 1 May 2026" in texts(widget)
    assert "Saturday 2 May 2026" in texts(widget) and "Sunday 3 May 2026" in texts(widget)
    assert widget.copy_text is not None and "Day 2, Saturday 2026-05-02" in widget.copy_text
    [effect] = effects(answered)
    assert effect.name == "itinerary_updated"
    assert effect.data == {"thread_id": thread_id, "item_id": widget.id, "days": 3}
    [reply] = done(answered, AssistantMessageItem)
    assert "Shown to the traveller: 3 days, Friday 2026-05-01" in reply.content[0].text

    # It reloads as it streamed; the plan kept beside it stays hidden.
    loaded = (await chat.thread(thread_id)).items.data
    assert [i.type for i in loaded] == [
        "user_message",
        "structured_input",
        "widget",
        "assistant_message",
    ]
    assert loaded[2] == widget

    # 4. A sync action marks the first evening booked: the updated card at once, saved.
    synced = await chat.sync(
        thread_id, widget.id, "itinerary.toggle_booked", {"day": 0, "slot": "evening"}
    )
    booked = synced.updated_item
    assert isinstance(booked, WidgetItem) and booked.id == widget.id
    assert booked.copy_text is not None and "Evening: Fado dinner (booked)" in booked.copy_text
    assert '"label":"Booked"' in texts(booked)
    assert (await chat.thread(thread_id)).items.data[2] == booked

    # 5. A streamed action reworks day 2: the request reaches the agent as hidden context.
    reworked = await chat.action(thread_id, widget.id, "itinerary.rework_day", {"day": 1})
    assert done(reworked, AssistantMessageItem)
    sent = chat.model_input()
    assert 'pressed \\"Rework this day\\" on day 2 (Saturday 2026-05-02)' in sent
    assert "Fado dinner (booked)" in sent  # the card, as text, with its booked state
    visible = (await chat.thread(thread_id)).items.data
    assert "hidden_context_item" not in [i.type for i in visible]

    # 6. "Add to calendar" hands the browser a signed link to the trip's iCalendar file.
    exported = await chat.action(thread_id, widget.id, "itinerary.add_to_calendar", {})
    [ready] = effects(exported)
    url = ready.data["url"]
    [message] = done(exported, AssistantMessageItem)
    assert url in message.content[0].text
    response = await chat.client.http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/calendar")
    assert response.headers["content-disposition"] == 'attachment; filename="trip-2026-05-01.ics"'
    events = icalendar.Calendar.from_ical(response.content).walk("VEVENT")
    assert [e.decoded("dtstart") for e in events] == [
        date(2026, 5, 1),
        date(2026, 5, 2),
        date(2026, 5, 3),
    ]
    assert "Evening: Fado dinner (booked)" in str(events[0]["description"])
    assert "Train from Rossio" in str(events[1]["description"])


# -- the calendar link --------------------------------------------------------------------


async def calendar_link(chat: Chat) -> str:
    thread_id, widget = await show_itinerary(chat)
    [ready] = effects(await chat.action(thread_id, widget.id, "itinerary.add_to_calendar", {}))
    url: str = ready.data["url"]
    return url


async def test_the_calendar_link_is_absolute_and_bound_to_its_owner(chat: Chat) -> None:
    url = await calendar_link(chat)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("http", "test")
    assert parts.path.startswith("/calendar/") and parts.path.endswith(".ics")
    assert (await chat.client.http.get(url)).status_code == 200

    for changed in (
        url.replace("user=alice", "user=bob"),
        url.replace("signature=", "signature=0"),
        url.replace("expires=", "expires=9"),
        url.split("?")[0],
    ):
        refused = await chat.client.http.get(changed)
        assert refused.status_code == 403, changed
        assert refused.json()["error"]["status"] == 403


async def test_a_calendar_link_for_a_deleted_thread_is_gone(chat: Chat) -> None:
    url = await calendar_link(chat)
    thread_id = urlsplit(url).path.split("/")[2]
    await chat.client.json(request("threads.delete", thread_id=thread_id))
    assert (await chat.client.http.get(url)).status_code == 404


async def test_a_plan_the_calendar_cannot_place_is_no_card(chat: Chat) -> None:
    bad = call("show_itinerary", {**PLAN, "start": "2026-02-30"})
    events = await chat.events(request("threads.create", input=user_input(f"Lisbon {bad}")))
    assert not done(events, WidgetItem) and not effects(events)
    [reply] = done(events, AssistantMessageItem)
    assert reply.content[0].text.startswith("Tool results: Error: ")  # the model can fix it
