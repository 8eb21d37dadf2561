"""The tools that need ChatKit: they show a widget, ask a question or use the browser.

They live on the server's side of the dependency arrow (`tools/` stays pure), and
`with_chatkit_tools` adds them to the agent only when it is served through ChatKit, so
the CLI runs the same agent without them. Each one's visible item is its own record in
the thread: the bridge shows no workflow task for it and keeps no tool-call copy.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any, Literal

from agents import Agent, FunctionTool, RunContextWrapper, StopAtTools, function_tool
from chatkit.agents import AgentContext, ClientToolCall
from chatkit.server import stream_widget
from chatkit.types import (
    ClientEffectEvent,
    HiddenContextItem,
    StructuredInput,
    StructuredInputFreeform,
    StructuredInputItem,
    StructuredInputMultipleChoice,
    StructuredInputMultipleChoiceOption,
    ThreadItemDoneEvent,
)
from chatkit.widgets import WidgetRoot

from .context import RequestContext
from .itinerary import PLAN_TYPE, DayPlan, Itinerary, lay_out
from .tools import ToolError
from .widgets import BUDGETS, PACES, itinerary_widget, preferences_form

Context = RunContextWrapper[AgentContext[RequestContext]]
Essential = Literal["pace", "budget", "dates", "origin"]
ITINERARY_UPDATED = "itinerary_updated"
PLAN_SUFFIX = "_plan"

UI_INSTRUCTIONS = """
In this chat app you can also use the traveller's screen:
- When pace, budget, dates or the starting point are missing, ask with ask_traveller \
(it shows a short form and ends your turn; the answers come back as the next message). \
If an answer is skipped, assume something sensible and say so.
- To fill in where the trip starts, you may call get_traveller_location (the browser asks \
the traveller; you get coordinates or an error back).
- show_preferences_form shows a form for pace, budget and interests; use it when the \
traveller wants to describe their travel style.
- Once you have a day-by-day plan, always show it with show_itinerary (the app lays the \
days on the calendar), then add a short summary in text. To change a plan, call \
show_itinerary again with the whole updated plan.
"""


def _plan_item_id(widget_id: str) -> str:
    return widget_id + PLAN_SUFFIX


async def stream_itinerary(ctx: AgentContext[RequestContext], itinerary: Itinerary) -> str:
    """Stream `itinerary` as a widget, keep its plan beside it, tell the client it changed."""
    widget_id = ""
    async for event in stream_widget(
        ctx.thread, itinerary_widget(itinerary), itinerary.as_text(), ctx.generate_id
    ):
        if isinstance(event, ThreadItemDoneEvent):
            widget_id = event.item.id
        await ctx.stream(event)
    await ctx.stream(ThreadItemDoneEvent(item=plan_item(ctx.thread.id, widget_id, itinerary)))
    await ctx.stream(
        ClientEffectEvent(
            name=ITINERARY_UPDATED,
            data={"thread_id": ctx.thread.id, "item_id": widget_id, "days": len(itinerary.days)},
        )
    )
    return widget_id


def plan_item(thread_id: str, widget_id: str, itinerary: Itinerary) -> HiddenContextItem:
    """The hidden item that keeps a widget's plan, for its actions and its calendar file."""
    return HiddenContextItem(
        id=_plan_item_id(widget_id),
        thread_id=thread_id,
        created_at=datetime.now(),
        content={"type": PLAN_TYPE, "itinerary": itinerary.model_dump(mode="json")},
    )


@function_tool
async def show_itinerary(
    context: Context, destination: str, start: str, days: list[DayPlan], notes: list[str]
) -> str:
    """Show the day-by-day itinerary to the traveller as a card with buttons.

    Args:
        destination: Where the trip goes, e.g. "Lisbon, Portugal".
        start: The first day's date, YYYY-MM-DD; each later day follows on the calendar.
        days: One entry per day, in order: morning, afternoon, evening and travel notes
            ("" when there is nothing to say).
        notes: Practical notes for the whole trip (airport, transfers, budget hints).
    """
    try:
        itinerary = lay_out(destination, start, days, notes)
    except ToolError as error:
        return f"Error: {error}"
    except ValueError as error:  # a field too long, too many days
        return f"Error: the plan is not valid: {str(error)[:300]}"
    await stream_itinerary(context.context, itinerary)
    first, last = itinerary.days[0], itinerary.days[-1]
    return (
        f"Shown to the traveller: {len(itinerary.days)} days, {first.weekday} "
        f"{first.date.isoformat()} to {last.weekday} {last.date.isoformat()}."
    )


_QUESTIONS: dict[Essential, StructuredInput] = {
    "pace": StructuredInputMultipleChoice(
        id="pace",
        question="What pace suits you?",
        options=[StructuredInputMultipleChoiceOption(value=value) for value in PACES],
    ),
    "budget": StructuredInputMultipleChoice(
        id="budget",
        question="What is your budget?",
        options=[StructuredInputMultipleChoiceOption(value=value) for value in BUDGETS],
    ),
    "dates": StructuredInputFreeform(
        id="dates",
        question="When do you travel, and for how long?",
        description="For example: 12 to 16 May 2026, or a week in June.",
    ),
    "origin": StructuredInputFreeform(
        id="origin", question="Where does the trip start?", description="A city or airport."
    ),
}


@function_tool
async def ask_traveller(context: Context, questions: list[Essential]) -> str:
    """Ask the traveller for missing essentials in a short form; this ends your turn.

    Args:
        questions: What to ask, any of "pace", "budget", "dates", "origin".
    """
    wanted = list(dict.fromkeys(questions)) or list(_QUESTIONS)
    ctx = context.context
    item = StructuredInputItem(
        id=ctx.generate_id("message"),
        thread_id=ctx.thread.id,
        created_at=datetime.now(),
        inputs=[_QUESTIONS[name].model_copy(deep=True) for name in wanted],
    )
    await ctx.stream(ThreadItemDoneEvent(item=item))
    return "Asked the traveller; their answers come in the next message."


@function_tool
async def get_traveller_location(context: Context) -> str:
    """Ask the traveller's browser where they are now (to fill in where the trip starts).

    The answer comes back as this tool's output: latitude and longitude, or an error.
    """
    context.context.client_tool_call = ClientToolCall(name="get_traveller_location", arguments={})
    return "Asked the browser for the traveller's location."


@function_tool
async def show_preferences_form(context: Context) -> str:
    """Show a form for the traveller's pace, budget and interests; this ends your turn."""
    form: WidgetRoot = preferences_form()
    await context.context.stream_widget(form, "A form asking for pace, budget and interests.")
    return "Showed the preferences form; the answers come in the next message."


UI_TOOLS: list[FunctionTool] = [
    show_itinerary,
    ask_traveller,
    get_traveller_location,
    show_preferences_form,
]
UI_TOOL_NAMES = frozenset(tool.name for tool in UI_TOOLS)
TURN_ENDING = ["ask_traveller", "get_traveller_location", "show_preferences_form"]


def with_chatkit_tools(agent: Agent[Any]) -> Agent[Any]:
    """`agent` with the ChatKit tools and instructions on how to use them.

    The tools that hand over to the traveller end the turn (`StopAtTools`).
    """
    base = agent.instructions
    # The last text made, shared by every run while the base text stays the same (it
    # changes once a day): each reply in flight holds its instructions, several KB apiece.
    last: list[str] = ["", UI_INSTRUCTIONS]

    async def instructions(context: RunContextWrapper[Any], this: Agent[Any]) -> str:
        text: Any = base(context, this) if callable(base) else (base or "")
        if inspect.isawaitable(text):
            text = await text
        if str(text) != last[0]:
            last[:] = [str(text), str(text) + UI_INSTRUCTIONS]
        return last[1]

    return agent.clone(
        tools=[*agent.tools, *UI_TOOLS],
        instructions=instructions,
        tool_use_behavior=StopAtTools(stop_at_tool_names=TURN_ENDING),
    )
