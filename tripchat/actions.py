"""What the traveller does in the UI: widget actions and answers to structured questions.

Action payloads come from the browser, so they are untrusted: each is validated into a
typed model before anything runs, and its sender must be an item of this thread that we
made for it (an itinerary card, a preferences form). Mistakes are 4xx before any stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from chatkit.actions import Action
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ClientEffectEvent,
    HiddenContextItem,
    StructuredInputItem,
    SyncCustomActionResponse,
    ThreadAddStructuredInputParams,
    ThreadCustomActionParams,
    ThreadItemDoneEvent,
    ThreadItemReplacedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    WidgetItem,
)
from chatkit.widgets import Card
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from .calendar_export import calendar_url, to_ics, verify_calendar_url
from .context import RequestContext
from .itinerary import MAX_DAYS, PLAN_TYPE, Itinerary, Slot
from .protocol import RequestError, describe_validation_error
from .signing import Signer
from .store import SQLStore
from .ui_tools import PLAN_SUFFIX, plan_item
from .widgets import (
    ADD_TO_CALENDAR,
    MORE_RELAXED,
    REWORK_DAY,
    SUBMIT_PREFERENCES,
    TOGGLE_BOOKED,
    Budget,
    Pace,
    itinerary_widget,
    preferences_summary,
    preferences_text,
)

MAX_ANSWERS = 20
MAX_VALUES = 20
MAX_ANSWER_CHARS = 2000
CALENDAR_READY = "calendar_ready"


class DayRef(BaseModel):
    day: int = Field(ge=0, lt=MAX_DAYS)


class SlotRef(DayRef):
    slot: Slot


class Preferences(BaseModel):
    pace: Pace
    budget: Budget
    interests: str = Field(default="", max_length=500)


class ReworkDay(BaseModel):
    type: Literal["itinerary.rework_day"]
    payload: DayRef


class MoreRelaxed(BaseModel):
    type: Literal["itinerary.more_relaxed"]
    payload: DayRef


class ToggleBooked(BaseModel):
    type: Literal["itinerary.toggle_booked"]
    payload: SlotRef


class AddToCalendar(BaseModel):
    type: Literal["itinerary.add_to_calendar"]
    payload: dict[str, Any] | None = None


class SubmitPreferences(BaseModel):
    type: Literal["preferences.submit"]
    payload: Preferences


TripAction = Annotated[
    ReworkDay | MoreRelaxed | ToggleBooked | AddToCalendar | SubmitPreferences,
    Field(discriminator="type"),
]
_ACTION: TypeAdapter[TripAction] = TypeAdapter(TripAction)
_KNOWN = (REWORK_DAY, MORE_RELAXED, TOGGLE_BOOKED, ADD_TO_CALENDAR, SUBMIT_PREFERENCES)
SYNC_TYPES = (TOGGLE_BOOKED,)
ON_ITINERARY = (REWORK_DAY, MORE_RELAXED, TOGGLE_BOOKED, ADD_TO_CALENDAR)

_ASKS = {
    REWORK_DAY: (
        'pressed "Rework this day"',
        "Propose a different plan for that day only and keep the other days.",
    ),
    MORE_RELAXED: (
        'pressed "Make it more relaxed"',
        "Make that day lighter (fewer activities, more free time) and keep the other days.",
    ),
}

Respond = Callable[[ThreadMetadata, RequestContext], AsyncIterator[ThreadStreamEvent]]


def parse_action(action: Action[str, Any], *, sync: bool) -> TripAction:
    """The action as one of our typed actions; a 400 for anything else."""
    # The SDK's `Action` defaults a missing type to a TypeVar, not a string.
    if not isinstance(action.type, str):
        raise RequestError(400, "the action has no type")
    if action.type not in _KNOWN:
        raise RequestError(400, f"unknown action type {action.type[:60]!r}")
    if sync and action.type not in SYNC_TYPES:
        raise RequestError(400, f"{action.type} streams its answer: send threads.custom_action")
    try:
        return _ACTION.validate_python({"type": action.type, "payload": action.payload})
    except ValidationError as exc:
        raise RequestError(400, describe_validation_error(exc)) from None


def _is_form(sender: WidgetItem) -> bool:
    return isinstance(sender.widget, Card) and bool(sender.widget.asForm)


class TripActions:
    """The server's handlers for widget actions, and the checks that come before them."""

    def __init__(self, store: SQLStore, signer: Signer, respond: Respond) -> None:
        self.store = store
        self.signer = signer
        self.respond = respond

    # -- before the stream ---------------------------------------------------

    async def check_action(
        self, params: ThreadCustomActionParams, context: RequestContext, *, sync: bool
    ) -> None:
        """Everything `stream` and `sync` rely on: the action, the thread, the sender."""
        action = parse_action(params.action, sync=sync)
        await self.store.load_thread(params.thread_id, context)
        sender = None
        if params.item_id is not None:
            item = await self.store.load_item(params.thread_id, params.item_id, context)
            if not isinstance(item, WidgetItem):
                raise RequestError(400, f"item {params.item_id} is not a widget")
            sender = item
        if action.type in ON_ITINERARY:
            if sender is None:
                raise RequestError(400, f"{action.type} needs the itinerary's item_id")
            plan = await self.plan(params.thread_id, sender.id, context)
            if plan is None:
                raise RequestError(400, f"item {sender.id} is not an itinerary")
            if isinstance(action.payload, DayRef) and action.payload.day >= len(plan.days):
                raise RequestError(400, f"the itinerary has no day {action.payload.day}")
        elif sender is not None and not _is_form(sender):
            raise RequestError(400, f"item {sender.id} is not a preferences form")

    async def check_answers(
        self, params: ThreadAddStructuredInputParams, context: RequestContext
    ) -> None:
        """The question exists, is still open, and the answers are of a sane size."""
        item = await self.store.load_item(params.thread_id, params.item_id, context)
        if not isinstance(item, StructuredInputItem):
            raise RequestError(400, f"item {params.item_id} is not a structured question")
        if item.status != "pending":
            raise RequestError(409, f"item {params.item_id} was already answered")
        answers = params.input.answers
        if len(answers) > MAX_ANSWERS:
            raise RequestError(400, f"at most {MAX_ANSWERS} answers")
        for answer in answers.values():
            if len(answer.values) > MAX_VALUES:
                raise RequestError(400, f"at most {MAX_VALUES} values per answer")
            if any(len(value) > MAX_ANSWER_CHARS for value in answer.values):
                raise RequestError(400, f"an answer is longer than {MAX_ANSWER_CHARS} characters")

    async def plan(
        self, thread_id: str, widget_id: str, context: RequestContext
    ) -> Itinerary | None:
        """The plan kept beside itinerary widget `widget_id`; None if it is not one."""
        try:
            item = await self.store.load_item(thread_id, widget_id + PLAN_SUFFIX, context)
        except NotFoundError:
            return None
        if not (isinstance(item, HiddenContextItem) and isinstance(item.content, dict)):
            return None
        if item.content.get("type") != PLAN_TYPE:
            return None
        return Itinerary.model_validate(item.content["itinerary"])

    async def _checked_plan(
        self, thread: ThreadMetadata, sender: WidgetItem | None, context: RequestContext
    ) -> tuple[WidgetItem, Itinerary]:
        plan = None if sender is None else await self.plan(thread.id, sender.id, context)
        if sender is None or plan is None:
            raise RequestError(400, "this action needs an itinerary")
        return sender, plan

    # -- the actions ---------------------------------------------------------

    async def sync(
        self,
        thread: ThreadMetadata,
        action: Action[str, Any],
        sender: WidgetItem | None,
        context: RequestContext,
    ) -> SyncCustomActionResponse:
        """Mark an activity booked or not: the updated card at once, saved."""
        parsed = parse_action(action, sync=True)
        assert isinstance(parsed, ToggleBooked)
        updated = await self._toggle(thread, parsed, sender, context)
        await self.store.save_item(thread.id, updated, context)
        return SyncCustomActionResponse(updated_item=updated)

    async def stream(
        self,
        thread: ThreadMetadata,
        action: Action[str, Any],
        sender: WidgetItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        """A streamed action: what it changes, then (for most) the agent's answer."""
        parsed = parse_action(action, sync=False)
        match parsed:
            case ToggleBooked():
                yield ThreadItemReplacedEvent(
                    item=await self._toggle(thread, parsed, sender, context)
                )
                return
            case AddToCalendar():
                async for event in self._add_to_calendar(thread, sender, context):
                    yield event
                return
            case SubmitPreferences():
                prefs = parsed.payload
                summary = preferences_text(prefs.pace, prefs.budget, prefs.interests)
                if sender is not None:
                    widget = preferences_summary(prefs.pace, prefs.budget, prefs.interests)
                    yield ThreadItemReplacedEvent(
                        item=sender.model_copy(update={"widget": widget, "copy_text": summary})
                    )
                note = f"The traveller set their travel style in the form. {summary}"
            case ReworkDay() | MoreRelaxed():
                sender, plan = await self._checked_plan(thread, sender, context)
                day = plan.days[parsed.payload.day]
                pressed, ask = _ASKS[parsed.type]
                note = (
                    f"The traveller {pressed} on day {parsed.payload.day + 1} "
                    f"({day.weekday} {day.date.isoformat()}) of the itinerary in card "
                    f"{sender.id}. {ask} Then show the whole updated itinerary with "
                    "show_itinerary."
                )
        yield ThreadItemDoneEvent(item=self._hidden(thread, note, context))
        async for event in self.respond(thread, context):
            yield event

    def _hidden(
        self, thread: ThreadMetadata, note: str, context: RequestContext
    ) -> HiddenContextItem:
        return HiddenContextItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=note,
        )

    async def _toggle(
        self,
        thread: ThreadMetadata,
        action: ToggleBooked,
        sender: WidgetItem | None,
        context: RequestContext,
    ) -> WidgetItem:
        sender, plan = await self._checked_plan(thread, sender, context)
        if action.payload.day >= len(plan.days):
            raise RequestError(400, f"the itinerary has no day {action.payload.day}")
        activity = plan.days[action.payload.day].slot(action.payload.slot)
        activity.booked = not activity.booked
        await self.store.save_item(thread.id, plan_item(thread.id, sender.id, plan), context)
        return sender.model_copy(
            update={"widget": itinerary_widget(plan), "copy_text": plan.as_text()}
        )

    async def _add_to_calendar(
        self, thread: ThreadMetadata, sender: WidgetItem | None, context: RequestContext
    ) -> AsyncIterator[ThreadStreamEvent]:
        sender, plan = await self._checked_plan(thread, sender, context)
        url = calendar_url(self.signer, context.base_url, thread.id, sender.id, context.user_id)
        yield ClientEffectEvent(name=CALENDAR_READY, data={"url": url, "item_id": sender.id})
        text = (
            f"Here is your trip to {plan.destination} as a calendar file: "
            f"[download it]({url}) and open it in your calendar app. The link works for a day."
        )
        yield ThreadItemDoneEvent(
            item=AssistantMessageItem(
                id=self.store.generate_item_id("message", thread, context),
                thread_id=thread.id,
                created_at=datetime.now(),
                content=[AssistantMessageContent(text=text)],
            )
        )

    # -- the calendar download -----------------------------------------------

    async def calendar_file(
        self, thread_id: str, item_id: str, user_id: str, expires: str, signature: str
    ) -> tuple[str, bytes]:
        """The file name and iCalendar bytes a signed URL grants; 403 or 404 otherwise."""
        if not verify_calendar_url(self.signer, thread_id, item_id, user_id, expires, signature):
            raise RequestError(403, "the calendar link is invalid or has expired")
        plan = await self.plan(thread_id, item_id, RequestContext(user_id))
        if plan is None:
            raise NotFoundError(f"Itinerary {item_id} not found")
        return f"trip-{plan.days[0].date.isoformat()}.ics", to_ics(plan, item_id)
