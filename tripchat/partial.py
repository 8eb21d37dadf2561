"""What a reply keeps when it ends early: the text the user saw, and a note for the next turn.

A reply is stopped (the client left, a shutdown, a delete) or cut short (the model call
failed mid-reply). Either way the text already streamed is saved, and a hidden note tells
the next turn that the reply was not finished, so the model does not build on it as if it
were. `Streamed` follows a reply's events to know what the user saw; it holds references,
never copies, since it sees every text delta.
"""

from __future__ import annotations

from datetime import datetime

from chatkit.agents import AgentContext
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartDone,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    SDKHiddenContextItem,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
    WorkflowItem,
)

from .context import RequestContext

CANCELLED_NOTE = "The user cancelled the stream. Stop responding to the prior request."
"""The hidden note ChatKit's `handle_stream_cancelled` leaves after a stopped reply."""
FAILED_NOTE = (
    "The previous assistant reply was cut off by an error before it was finished; "
    "the user saw only the part above. Do not treat it as complete."
)
"""The hidden note left after a reply the model failed to finish."""
HIDDEN = ("hidden_context_item", "sdk_hidden_context")
"""Item types the user never sees (ChatKit does not send them)."""


def with_text(pending: list[ThreadItem]) -> list[ThreadItem]:
    """The assistant messages among `pending` that have text: what a stopped reply keeps."""
    return [
        item
        for item in pending
        if isinstance(item, AssistantMessageItem) and any(c.text.strip() for c in item.content)
    ]


def hidden_note(thread_id: str, note_id: str, note: str) -> SDKHiddenContextItem:
    """A note for the model, never shown to the user."""
    return SDKHiddenContextItem(
        id=note_id, thread_id=thread_id, created_at=datetime.now(), content=note
    )


def stopped_reply(thread_id: str, pending: list[ThreadItem], note_id: str) -> list[ThreadItem]:
    """What ChatKit's `handle_stream_cancelled` keeps of a stopped reply, in order: its
    assistant messages that have text, then the hidden note that it was stopped (so the
    next turn does not carry it on)."""
    return [*with_text(pending), hidden_note(thread_id, note_id, CANCELLED_NOTE)]


class Streamed:
    """What a reply has shown so far: the assistant message being streamed (its id and
    start, its finished parts and the text deltas of the current one), and whether
    anything else visible (a workflow, a widget, an earlier message) went out.

    Per text delta it appends the delta's string: no copy, no model built; the message
    is built only if the reply is cut short.
    """

    __slots__ = ("_deltas", "_message", "_parts", "shown", "workflow_id")

    def __init__(self) -> None:
        self._message: tuple[str, str, datetime] | None = None
        """(id, thread id, created_at) of the message being streamed: not the item, which
        nothing else keeps once it is sent."""
        self._parts: list[AssistantMessageContent] = []
        self._deltas: list[str] = []
        self.shown = False
        self.workflow_id: str | None = None
        """The workflow this reply added, if any: it may still be open."""

    def see(self, event: ThreadStreamEvent) -> None:
        """Note `event`, which has just been sent on to the client.

        Exact type checks: `isinstance` on a pydantic class goes through `ABCMeta`, at
        several times the cost, on every delta.
        """
        if type(event) is ThreadItemUpdatedEvent:
            update = event.update
            if type(update) is AssistantMessageContentPartTextDelta:
                self._deltas.append(update.delta)
            elif type(update) is AssistantMessageContentPartDone:
                self._parts.append(update.content)
                self._deltas = []
        elif type(event) is ThreadItemAddedEvent:
            if type(event.item) is AssistantMessageItem:
                item = event.item
                self._message = (item.id, item.thread_id, item.created_at)
                self._parts, self._deltas = [], []
            else:
                self.shown = True
                if type(event.item) is WorkflowItem:
                    self.workflow_id = event.item.id
        elif type(event) is ThreadItemDoneEvent and event.item.type not in HIDDEN:
            self.shown = True
            if self._message is not None and event.item.id == self._message[0]:
                self._message = None

    def message(self) -> AssistantMessageItem | None:
        """The assistant message being streamed, with the text sent so far; None if none."""
        if self._message is None:
            return None
        content = [*self._parts]
        if self._deltas:
            content.append(AssistantMessageContent(text="".join(self._deltas)))
        item_id, thread_id, created_at = self._message
        return AssistantMessageItem(
            id=item_id, thread_id=thread_id, created_at=created_at, content=content
        )


async def cut_short(ctx: AgentContext[RequestContext], streamed: Streamed) -> list[ThreadItem]:
    """The items that finish a reply the model failed mid-way, to send as done (so they are
    shown finished and saved): the workflow it left open, closed as the SDK closes one;
    its text so far; the hidden note. None at all if it had shown nothing, as before it
    began."""
    kept: list[ThreadItem] = []
    workflow = ctx.workflow_item
    if workflow is not None and workflow.id == streamed.workflow_id:
        # Summarised and collapsed as when its answer starts; the done event this queues
        # for the run's stream is never read (that stream has failed): we send our own.
        await ctx.end_workflow()
        kept.append(workflow)
    message = streamed.message()
    kept += with_text([message] if message else [])
    if not (kept or streamed.shown):
        return []
    return [*kept, hidden_note(ctx.thread.id, ctx.generate_id("sdk_hidden_context"), FAILED_NOTE)]
