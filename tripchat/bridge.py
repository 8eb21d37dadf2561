"""The bridge between ChatKit and the Agents SDK: one agent turn as ChatKit events.

`run_turn` feeds a thread's history to the agent and streams its answer as thread events:
tool steps appear as workflow tasks and are kept (hidden) so later turns replay them,
Chat Completions' shared `__fake_id__` becomes a real id per item, and a model failure
becomes a retryable message, after what the reply had shown is finished and kept
(`partial`). It knows nothing of requests, routing or the web.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio
import openai
from agents import Agent, ModelBehaviorError, RunContextWrapper, RunHooks, Runner, Tool
from agents.exceptions import _should_drain_stream_events_before_raising
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.tool_context import ToolContext
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.types import (
    AssistantMessageItem,
    Attachment,
    CustomTask,
    HiddenContextItem,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
    URLSource,
    UserMessageTagContent,
    WidgetItem,
    WorkflowItem,
)
from openai.types.responses import (
    EasyInputMessageParam,
    ResponseInputContentParam,
    ResponseInputTextParam,
)
from openai.types.responses.response_input_item_param import Message

from .context import RequestContext
from .fastpath import coalescing
from .partial import Streamed, cut_short
from .sources import source_annotations, source_for
from .tools import describe_tool_call

logger = logging.getLogger("tripchat.bridge")

TOOL_IO = "tripchat.tool_io"
ANNOUNCE_SECONDS = 5.0


AttachmentContent = Callable[[Attachment], Awaitable[ResponseInputContentParam]]


class TripItemConverter(ThreadItemConverter):
    """Thread items to model input that works with both the Responses and Chat APIs.

    Made per turn with the user's `attachments` reader, which loads an attachment's bytes
    (scoped to that user) and shapes them for the configured API.
    """

    def __init__(self, attachments: AttachmentContent | None = None) -> None:
        self.attachments = attachments

    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        if self.attachments is None:
            return ResponseInputTextParam(
                type="input_text", text=f"[The user attached {attachment.name!r}.]"
            )
        return await self.attachments(attachment)

    async def assistant_message_to_input(self, item: AssistantMessageItem) -> EasyInputMessageParam:
        # Plain text content: Chat Completions rejects the SDK's `output_text` parts.
        return EasyInputMessageParam(
            type="message", role="assistant", content="".join(c.text for c in item.content)
        )

    async def hidden_context_to_input(self, item: HiddenContextItem) -> Any:
        if isinstance(item.content, dict):
            # Tool calls replay as such; other data (a widget's plan) is the server's own.
            return item.content["items"] if item.content.get("type") == TOOL_IO else None
        return await super().hidden_context_to_input(item)

    async def widget_to_input(self, item: WidgetItem) -> Any:
        # The widget's text (what its copy button copies), not its component tree.
        if item.copy_text is None:
            return await super().widget_to_input(item)
        return Message(
            type="message",
            role="user",
            content=[
                ResponseInputTextParam(
                    type="input_text",
                    text=f"Shown to the traveller as a card (id: {item.id}):\n{item.copy_text}",
                )
            ],
        )

    async def workflow_to_input(self, item: WorkflowItem) -> None:
        # The tool calls themselves are replayed from their hidden items.
        return None

    async def tag_to_message_content(self, tag: UserMessageTagContent) -> ResponseInputTextParam:
        return ResponseInputTextParam(type="input_text", text=f"@{tag.text}: {tag.data}")


class ToolStepHooks(RunHooks[AgentContext[RequestContext]]):
    """Show each tool step as a workflow task and keep the call and result for later turns.

    One instance per run: it remembers which task shows which tool call, and the sources
    the data tools supplied. Tools in `own_items` (a widget, a question) are their own
    record: no task, no kept call.
    """

    def __init__(self, own_items: frozenset[str] = frozenset()) -> None:
        self._tasks: dict[str, int] = {}
        self._created: str | None = None
        self._shown = asyncio.Event()
        self._own_items = own_items
        self.sources: list[URLSource] = []

    def shown(self, event: ThreadStreamEvent) -> None:
        """Called once `event` has been sent on: the workflow we created is now on the wire."""
        if isinstance(event, ThreadItemAddedEvent) and event.item.id == self._created:
            self._shown.set()

    async def on_tool_start(
        self,
        context: RunContextWrapper[AgentContext[RequestContext]],
        agent: Agent[Any],
        tool: Tool,
    ) -> None:
        if not isinstance(context, ToolContext) or context.tool_name in self._own_items:
            return
        ctx = context.context
        title = describe_tool_call(context.tool_name, context.tool_arguments)
        if ctx.workflow_item is not None and ctx.workflow_item.id == self._created:
            # The SDK queues the new workflow by reference: adding a task before that event
            # is sent would put it in the event and announce it again with task.added.
            with anyio.move_on_after(ANNOUNCE_SECONDS):
                await self._shown.wait()
        created = ctx.workflow_item is None
        await ctx.add_workflow_task(CustomTask(title=title, status_indicator="loading"))
        assert ctx.workflow_item is not None
        if created:
            self._created = ctx.workflow_item.id
        self._tasks[context.tool_call_id] = len(ctx.workflow_item.workflow.tasks) - 1

    async def on_tool_end(
        self,
        context: RunContextWrapper[AgentContext[RequestContext]],
        agent: Agent[Any],
        tool: Tool,
        result: object,
    ) -> None:
        if not isinstance(context, ToolContext) or context.tool_name in self._own_items:
            return
        if source := source_for(context.tool_name, context.tool_arguments, str(result)):
            self.sources.append(source)
        ctx = context.context
        index = self._tasks.pop(context.tool_call_id, None)
        if ctx.workflow_item is not None and index is not None:
            task = ctx.workflow_item.workflow.tasks[index]
            if isinstance(task, CustomTask):
                done = task.model_copy(update={"status_indicator": "complete"})
                await ctx.update_workflow_task(done, index)
        call = {
            "type": "function_call",
            "call_id": context.tool_call_id,
            "name": context.tool_name,
            "arguments": context.tool_arguments,
        }
        output = {
            "type": "function_call_output",
            "call_id": context.tool_call_id,
            "output": str(result),
        }
        await ctx.stream(
            ThreadItemDoneEvent(
                item=HiddenContextItem(
                    id=ctx.generate_id("message"),
                    thread_id=ctx.thread.id,
                    created_at=datetime.now(),
                    content={"type": TOOL_IO, "items": [call, output]},
                )
            )
        )


UPSTREAM_FAULTS = (openai.APIError, ModelBehaviorError)
"""A model call that failed: an error status, a lost or stalled connection, or a stream the
API itself ended in failure (`response.failed`, which the Agents SDK raises as this)."""


def _api_failure(exc: Exception) -> bool:
    """An error status, a lost or stalled connection, or the API ending its stream in
    failure (the Agents SDK marks the `ModelBehaviorError` it raises for that)."""
    return isinstance(exc, openai.APIError) or _should_drain_stream_events_before_raising(exc)


def _upstream_error(exc: Exception) -> CustomStreamError:
    """A model failure as a message the user can act on; always retryable."""
    if isinstance(exc, openai.RateLimitError):
        text = "The trip planner is busy right now (rate limited). Please try again in a moment."
    elif isinstance(exc, openai.APITimeoutError):
        text = "The trip planner took too long to answer. Please try again."
    elif isinstance(exc, openai.APIConnectionError):
        text = "The trip planner could not reach its model. Please try again shortly."
    else:
        text = "The trip planner's model failed to answer. Please try again."
    return CustomStreamError(text, allow_retry=True)


async def run_turn(
    agent: Agent[Any],
    history: list[ThreadItem],
    ctx: AgentContext[RequestContext],
    converter: ThreadItemConverter,
    own_items: frozenset[str] = frozenset(),
) -> AsyncIterator[ThreadStreamEvent]:
    """One agent turn over `history` (oldest first), as the thread events it produces.

    The model run is cancelled if the caller stops early (the client left), so no tokens
    stream to nobody. An answer that used the data tools names them as its sources. If
    the model fails mid-reply, what the user saw is finished and kept (`partial`) before
    the error.
    """
    hooks = ToolStepHooks(own_items)
    streamed = Streamed()
    result = Runner.run_streamed(
        own_agent(agent), await converter.to_agent_input(history), context=ctx, hooks=hooks
    )
    del history  # its model input is made; the parsed items would be held to the reply's end
    try:
        async for event in _real_ids(stream_agent_response(ctx, coalescing(result)), ctx):
            yield _with_sources(event, hooks.sources)
            hooks.shown(event)
            streamed.see(event)
    except UPSTREAM_FAULTS as exc:
        # The API's own failures in one line; any other model-behaviour error (a tool the
        # model made up, an SDK check) with its traceback, to be diagnosable.
        logger.warning(
            "model request failed for thread %s: %r",
            ctx.thread.id,
            exc,
            exc_info=not _api_failure(exc),
        )
        for item in await cut_short(ctx, streamed):
            yield _with_sources(ThreadItemDoneEvent(item=item), hooks.sources)
        raise _upstream_error(exc) from None
    finally:
        if not result.is_complete:
            result.cancel()


def own_agent(agent: Agent[Any]) -> Agent[Any]:
    """`agent` as an object of this run alone (its fields, tools among them, shared).

    The Agents SDK checks that no run changes an agent's tools under another by comparing
    every run of the same agent object with every other, at each run's start and end: with
    a thousand replies of one shared agent ending together, that is a million comparisons
    and seconds of CPU before their model calls close. A shallow copy per run keeps each
    check to itself; `Agent.clone` would do the same at 50x the cost (it re-validates).
    """
    return copy.copy(agent)


def _with_sources(event: ThreadStreamEvent, sources: list[URLSource]) -> ThreadStreamEvent:
    """A finished answer with the turn's sources on its last part, so the client lists them."""
    if not (
        sources
        and isinstance(event, ThreadItemDoneEvent)
        and isinstance(event.item, AssistantMessageItem)
        and event.item.content
    ):
        return event
    last = event.item.content[-1]
    sourced = last.model_copy(
        update={"annotations": [*last.annotations, *source_annotations(sources)]}
    )
    content = [*event.item.content[:-1], sourced]
    return event.model_copy(update={"item": event.item.model_copy(update={"content": content})})


async def _real_ids(
    events: AsyncIterator[ThreadStreamEvent], ctx: AgentContext[RequestContext]
) -> AsyncIterator[ThreadStreamEvent]:
    """Give each assistant item a real id: Chat Completions models all share `__fake_id__`."""
    current: str | None = None
    async for event in events:
        if isinstance(event, ThreadItemAddedEvent) and event.item.id == FAKE_RESPONSES_ID:
            current = ctx.generate_id("message")
            event = event.model_copy(update={"item": event.item.model_copy(update={"id": current})})
        elif isinstance(event, ThreadItemUpdatedEvent) and event.item_id == FAKE_RESPONSES_ID:
            current = current or ctx.generate_id("message")
            event.item_id = current  # the SDK made this event for us alone: no copy needed
        elif isinstance(event, ThreadItemDoneEvent) and event.item.id == FAKE_RESPONSES_ID:
            item_id = current or ctx.generate_id("message")
            event = event.model_copy(update={"item": event.item.model_copy(update={"id": item_id})})
            current = None
        yield event


class _SDKModelErrorFilter(logging.Filter):
    """Drops the Agents SDK's ERROR for a failed model stream: `run_turn` already logs the
    cause as a warning, and a client can provoke it (a message past the context window)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Error streaming response")


_SDK_MODEL_ERRORS = _SDKModelErrorFilter()


def ignore_sdk_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Keep what the SDKs log for an ended stream out of the error log.

    When a reply is cancelled, `chatkit.agents._merge_generators` abandons its two
    `__anext__` tasks: one ends in `StopAsyncIteration` nobody retrieves, the other is
    destroyed pending. Both are harmless; each would log an ERROR with a traceback.
    """
    logging.getLogger("openai.agents").addFilter(_SDK_MODEL_ERRORS)  # adding it twice is a no-op

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        task = context.get("task") or context.get("future")
        leftover = isinstance(context.get("exception"), StopAsyncIteration) or (
            isinstance(task, asyncio.Task)
            and getattr(task.get_coro(), "__qualname__", "") == "_AsyncQueueIterator.__anext__"
        )
        if leftover:
            logger.debug("dropped a cancelled stream's leftover task: %s", context.get("message"))
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
