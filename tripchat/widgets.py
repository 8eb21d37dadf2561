"""The trip's widgets, built from typed data with `chatkit.widgets` components; no I/O.

Each button carries a small action (`actions.py` validates it on the way back): the day
buttons stream a reworked plan, the booked toggles are sync actions that answer with the
updated card at once.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from chatkit.actions import ActionConfig
from chatkit.widgets import (
    Badge,
    Button,
    Caption,
    Card,
    Col,
    Divider,
    Input,
    Label,
    Row,
    Select,
    SelectOption,
    Text,
    Title,
    WidgetComponent,
)

from .itinerary import SLOTS, Day, Itinerary

Pace = Literal["relaxed", "balanced", "packed"]
Budget = Literal["shoestring", "moderate", "comfortable", "luxury"]
PACES: tuple[str, ...] = get_args(Pace)
BUDGETS: tuple[str, ...] = get_args(Budget)
REWORK_DAY: Final = "itinerary.rework_day"
MORE_RELAXED: Final = "itinerary.more_relaxed"
TOGGLE_BOOKED: Final = "itinerary.toggle_booked"
ADD_TO_CALENDAR: Final = "itinerary.add_to_calendar"
SUBMIT_PREFERENCES: Final = "preferences.submit"


def _slot_row(index: int, day: Day, slot: str) -> Row:
    activity = day.slot(slot)  # type: ignore[arg-type]
    return Row(
        gap=2,
        align="center",
        children=[
            Caption(value=slot.capitalize()),
            Text(value=activity.text, size="sm", lineThrough=False, width="100%"),
            Button(
                label="Booked" if activity.booked else "Mark booked",
                size="sm",
                variant="solid" if activity.booked else "outline",
                iconStart="check" if activity.booked else None,
                onClickAction=ActionConfig(
                    type=TOGGLE_BOOKED,
                    payload={"day": index, "slot": slot},
                    streaming=False,
                    loadingBehavior="self",
                ),
            ),
        ],
    )


def _day(index: int, day: Day) -> Col:
    children: list[WidgetComponent] = [
        Row(
            gap=2,
            children=[
                Title(value=f"Day {index + 1}", size="sm"),
                Badge(label=f"{day.weekday} {day.date:%-d %b %Y}", variant="soft"),
            ],
        ),
        *(_slot_row(index, day, slot) for slot in SLOTS),
    ]
    if day.travel:
        children.append(Caption(value=f"Travel: {day.travel}"))
    children.append(
        Row(
            gap=2,
            children=[
                Button(
                    label="Rework this day",
                    size="sm",
                    variant="outline",
                    onClickAction=ActionConfig(type=REWORK_DAY, payload={"day": index}),
                ),
                Button(
                    label="Make it more relaxed",
                    size="sm",
                    variant="outline",
                    onClickAction=ActionConfig(type=MORE_RELAXED, payload={"day": index}),
                ),
            ],
        )
    )
    return Col(gap=2, key=f"day-{index}", children=children)


def itinerary_widget(itinerary: Itinerary) -> Card:
    """The itinerary card: a section per day, its slots with booked toggles, its buttons."""
    children: list[WidgetComponent] = [Title(value=f"Your trip to {itinerary.destination}")]
    for index, day in enumerate(itinerary.days):
        children.extend([Divider(), _day(index, day)])
    if itinerary.notes:
        children.append(Divider())
        children.extend(Caption(value=note) for note in itinerary.notes)
    children.extend(
        [
            Divider(),
            Button(
                label="Add to calendar",
                iconStart="calendar",
                onClickAction=ActionConfig(type=ADD_TO_CALENDAR, payload={}),
            ),
        ]
    )
    return Card(size="lg", children=children)


def _options(values: tuple[str, ...]) -> list[SelectOption]:
    return [SelectOption(value=value, label=value.capitalize()) for value in values]


def preferences_form() -> Card:
    """Pace, budget and interests as a form; its values arrive in the action's payload."""
    return Card(
        asForm=True,
        children=[
            Title(value="Your travel style", size="sm"),
            Label(value="Pace", fieldName="pace"),
            Select(name="pace", options=_options(PACES), defaultValue="balanced"),
            Label(value="Budget", fieldName="budget"),
            Select(name="budget", options=_options(BUDGETS), defaultValue="moderate"),
            Label(value="Interests", fieldName="interests"),
            Input(name="interests", placeholder="food, museums, hiking…"),
        ],
        confirm={
            "label": "Save preferences",
            "action": ActionConfig(type=SUBMIT_PREFERENCES, payload={}),
        },
    )


def preferences_summary(pace: str, budget: str, interests: str) -> Card:
    """What the form becomes once submitted: the choices, read-only."""
    return Card(
        children=[
            Title(value="Your travel style", size="sm"),
            Text(value=preferences_text(pace, budget, interests)),
        ]
    )


def preferences_text(pace: str, budget: str, interests: str) -> str:
    return f"Pace: {pace}. Budget: {budget}. Interests: {interests or 'none given'}."
