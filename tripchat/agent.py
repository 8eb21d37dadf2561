"""The trip planner: one Agents SDK agent whose facts come from offline data tools.

It runs without ChatKit: the CLI drives it directly, the server wraps it in ChatKit.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from agents import (
    Agent,
    Model,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunContextWrapper,
    set_tracing_disabled,
    set_tracing_export_api_key,
)
from openai import AsyncOpenAI

from .config import Settings
from .modelclient import LeanOpenAI
from .tools import TRIP_TOOLS

INSTRUCTIONS = """\
You are Tripchat, a friendly, precise trip planner. You plan itineraries over a \
conversation of several turns. Today is {today}.

How you work:
- Before a full plan, make sure you know the essentials: destination, dates (or month \
and length), where the traveller starts from, budget and pace. Ask briefly for what is \
missing (at most three questions at a time); if the user wants you to just go ahead, \
state your assumptions and plan.
- Never state travel facts from memory when a tool can check them: use the tools for \
places, airports, distances and flight times, public holidays, local time and time \
differences, and the trip calendar (dates, weekdays, nights). If a tool answers with an \
error, fix the arguments or ask the user; if a name is ambiguous, ask which one is meant.
- Mention public holidays that fall in the trip (closures, crowds) and the time difference.
- When you have enough, give a day-by-day itinerary: one heading per day with its date \
and weekday, morning / afternoon / evening, realistic travel times, and a short list of \
practical notes (airport, transfers, budget hints). Keep it skimmable.
- Later turns refine the plan: change only what the user asks and keep the rest.
- The traveller may attach files: a booking confirmation (PDF), a photo of a place, a \
list of wishes. Read them first: take dates, flight numbers and times, airports and \
hotels from a booking as fixed points and plan around them (arrival and departure days \
lighter, transfers from the booked airport); name what a photo shows only if you are \
sure, and ask otherwise; treat a list of wishes as the traveller's priorities. If an \
attached booking and the conversation disagree, point it out and ask.
"""


def instructions(context: RunContextWrapper[Any], agent: Agent[Any]) -> str:
    """Instructions carrying today's date, so 'next weekend' resolves correctly."""
    return INSTRUCTIONS.format(today=date.today().isoformat())


def openai_client(settings: Settings, *, lean: bool = True) -> AsyncOpenAI:
    """The client for the configured endpoint; its owner closes it (`async with`).

    Lean on streamed text (`modelclient`) unless told otherwise: the stock client's
    per-delta validation was the largest single cost of a long reply.
    """
    return (LeanOpenAI if lean else AsyncOpenAI)(
        api_key=settings.openai_api_key or "not-needed",
        base_url=settings.openai_base_url,
        timeout=settings.model_timeout,
        max_retries=settings.model_max_retries,
    )


def build_model(settings: Settings, client: AsyncOpenAI) -> Model:
    """The configured model on `client`: Responses API, or Chat Completions."""
    if settings.use_chat_completions:
        return OpenAIChatCompletionsModel(model=settings.model, openai_client=client)
    return OpenAIResponsesModel(model=settings.model, openai_client=client)


def configure_tracing(settings: Settings) -> None:
    """Export traces only where asked: a self-hosted endpoint must not leak them to OpenAI."""
    set_tracing_disabled(not settings.tracing)
    if settings.tracing and settings.openai_api_key:
        set_tracing_export_api_key(settings.openai_api_key)


def create_trip_planner_agent(settings: Settings, client: AsyncOpenAI | None = None) -> Agent[Any]:
    """The trip planner agent on the configured model, with the offline travel tools.

    Pass the `client` when you own its lifetime (a server closes it at shutdown).
    """
    return Agent(
        name="Trip planner",
        instructions=instructions,
        tools=list(TRIP_TOOLS),
        model=build_model(settings, client or openai_client(settings)),
    )
