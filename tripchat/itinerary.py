"""A trip plan as data: days with their calendar date and weekday, three slots each.

The model writes the activities; the dates and weekdays come from `trip_calendar`, so a
plan never says "Saturday 3 May" when the 3rd is a Friday. Widgets, actions and the
calendar file are all built from this one typed model.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from .tools import trip_calendar

Slot = Literal["morning", "afternoon", "evening"]
SLOTS: tuple[Slot, ...] = ("morning", "afternoon", "evening")
MAX_DAYS = 30
MAX_TEXT = 500
PLAN_TYPE = "tripchat.itinerary"
"""The `type` of the hidden item that keeps a widget's plan (its id is the widget's + `_plan`)."""


class Activity(BaseModel):
    """What one part of a day holds, and whether the traveller has booked it."""

    text: str = Field(max_length=MAX_TEXT)
    booked: bool = False


class Day(BaseModel):
    date: date
    weekday: str
    morning: Activity
    afternoon: Activity
    evening: Activity
    travel: str = Field(default="", max_length=MAX_TEXT)

    def slot(self, name: Slot) -> Activity:
        activity: Activity = getattr(self, name)
        return activity


class Itinerary(BaseModel):
    destination: str = Field(max_length=200)
    days: list[Day] = Field(min_length=1, max_length=MAX_DAYS)
    notes: list[str] = Field(default_factory=list, max_length=20)

    def as_text(self) -> str:
        """The plan as plain text: the widget's copy button, and what the model reads later."""
        lines = [f"Itinerary: {self.destination}"]
        for number, day in enumerate(self.days, 1):
            lines.append(f"Day {number}, {day.weekday} {day.date.isoformat()}:")
            for name in SLOTS:
                activity = day.slot(name)
                booked = " (booked)" if activity.booked else ""
                lines.append(f"- {name.capitalize()}: {activity.text}{booked}")
            if day.travel:
                lines.append(f"- Travel: {day.travel}")
        lines.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(lines)


class DayPlan(BaseModel):
    """One day as the model plans it: no date, the calendar supplies that."""

    morning: str
    afternoon: str
    evening: str
    travel: str


def lay_out(destination: str, start: str, days: list[DayPlan], notes: list[str]) -> Itinerary:
    """The model's days placed on the calendar from `start` (YYYY-MM-DD).

    Raises `ToolError` for a bad date or length, as the calendar tool does.
    """
    calendar = trip_calendar(start, max(1, len(days)))
    return Itinerary(
        destination=destination,
        days=[
            Day(
                date=date.fromisoformat(entry["date"]),
                weekday=entry["weekday"],
                morning=Activity(text=plan.morning),
                afternoon=Activity(text=plan.afternoon),
                evening=Activity(text=plan.evening),
                travel=plan.travel,
            )
            for entry, plan in zip(calendar["days"], days, strict=False)
        ],
        notes=notes,
    )
