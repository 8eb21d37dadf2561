"""The ChatKit server: every ChatKit request type routed, checked and answered.

`TripPlannerServer` keeps the SDK's routing and event pipeline and closes its gaps:
requests are checked *before* a stream starts (so a bad id is a 404, not a cut
connection); every failure after that ends in an `error` event; a disconnect or a
shutdown cancels the model run and keeps what was streamed. The agent turn itself is
`bridge.run_turn`. It knows no web framework: `process` takes bytes and returns the
SDK's result types.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial
from typing import Any, cast

import anyio
from agents import Agent
from chatkit.actions import Action
from chatkit.agents import AgentContext
from chatkit.server import DEFAULT_PAGE_SIZE, ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    AudioInput,
    ChatKitReq,
    ClientToolCallItem,
    ErrorEvent,
    FeedbackKind,
    HiddenContextItem,
    InputTranscribeReq,
    ItemsFeedbackReq,
    ItemsListReq,
    NonStreamingReq,
    SDKHiddenContextItem,
    StreamingReq,
    SyncCustomActionResponse,
    Thread,
    ThreadCreatedEvent,
    ThreadItem,
    ThreadMetadata,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsCustomActionReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    ThreadsSyncCustomActionReq,
    ThreadStreamEvent,
    ThreadsUpdateReq,
    TranscriptionResult,
    UserMessageItem,
    WidgetItem,
    is_streaming_req,
)

from . import leanrun
from .actions import TripActions
from .attachments import Attachments
from .bridge import TripItemConverter, run_turn
from .context import RequestContext
from .dictation import Dictation, decode_audio
from .partial import stopped_reply
from .protocol import (
    MAX_PAGE,
    MAX_TITLE,
    RequestError,
    check_input,
    check_limit,
    frame,
    parse_request,
    short_title,
    text_of,
    thread_id_of,
)
from .replyqueue import ReplyQueue
from .signing import Signer
from .store import SQLStore
from .streams import DELETED, Busy, Slot, Streams
from .ui_tools import UI_TOOL_NAMES, with_chatkit_tools

logger = logging.getLogger("tripchat.server")

PENDING_LOOKBACK = 20
SHIELDED_SAVE_SECONDS = 10.0
COALESCE_BYTES = 64 * 1024


RESTARTING = ErrorEvent(
    code="custom", message="The server is restarting. Please retry.", allow_retry=True
)
FAILED = ErrorEvent(code="custom", message="Something went wrong. Please retry.", allow_retry=True)


class TripPlannerServer(ChatKitServer[RequestContext]):
    """ChatKit over the trip planner agent and a durable `SQLStore`."""

    def __init__(
        self,
        store: SQLStore,
        agent: Agent[Any],
        *,
        history_items: int = 40,
        max_streams_per_user: int = 10,
        lease_seconds: float = 15.0,
        signer: Signer | None = None,
        attachments: Attachments | None = None,
        dictation: Dictation | None = None,
    ) -> None:
        # Signs the URLs a browser fetches without our headers; a deployment of several
        # processes passes one shared key, a lone server can make its own.
        self.signer = signer or Signer(secrets.token_bytes(32))
        self.attachments = attachments or Attachments(store, self.signer)
        # Store is invariant in its context type; ours reads only `user_id` from it.
        super().__init__(cast(Store[RequestContext], store), self.attachments)
        self.sql_store = store
        self.agent = with_chatkit_tools(agent)
        leanrun.install()  # the SDK's per-run set-up without its moot work
        self.history_items = history_items
        self.streams = Streams(max_streams_per_user, store, lease_seconds)
        self.draining = False
        self._grace: anyio.CancelScope | None = None  # the drain's wait, while it runs
        self._hurried = False
        self.dictation = dictation
        self.actions = TripActions(store, self.signer, lambda t, c: self.respond(t, None, c))

    # -- entry point ----------------------------------------------------------

    async def process(
        self, request: str | bytes | bytearray, context: RequestContext
    ) -> StreamingResult | NonStreamingResult:
        """Parse, check everything checkable, then stream or answer.

        Raises `RequestError` (4xx) or `NotFoundError` (404) before any byte is sent.
        """
        parsed = parse_request(bytes(request) if isinstance(request, bytearray) else request)
        await self._check(parsed, context)
        if is_streaming_req(parsed):
            return await self._start_stream(parsed, context)
        return NonStreamingResult(await self._process_non_streaming(parsed, context))

    async def _start_stream(
        self, request: StreamingReq, context: RequestContext
    ) -> StreamingResult:
        """Take the reply's place in the registry and start it.

        It starts now, not when the response does: its place then lasts exactly as long
        as the reply, however late the response starts (or if it never does).
        """
        if self.draining:
            raise _restarting()
        thread_id = thread_id_of(request)
        try:
            slot = await self.streams.reserve(context.user_id, thread_id)
        except Busy as exc:
            raise RequestError(exc.status, exc.message) from None
        try:
            # While it waited for its thread, the thread may have gone or a shutdown begun.
            if slot.waited and thread_id is not None:
                await self.store.load_thread(thread_id, context)
            if self.draining:
                raise _restarting()
            if slot.stopped_with is not None:  # a delete stopped it during that lookup
                raise NotFoundError(f"Thread {thread_id} not found")
        except BaseException:
            self.streams.end(slot)
            raise
        queue = ReplyQueue()
        producer = asyncio.create_task(self._produce(request, context, queue, slot))
        self.streams.start(slot, producer)
        return StreamingResult(self._stream(queue, producer, slot))

    async def _check(self, request: ChatKitReq, context: RequestContext) -> None:
        """What a stream would only find out after its headers are sent, and bad parameters.

        Non-streaming requests need no lookup here: their store calls raise `NotFoundError`
        before anything is sent.
        """
        match request:
            case ThreadsCreateReq():
                check_input(request.params.input)
                await self.attachments.check_message(request.params.input.attachments, context)
            case ThreadsAddUserMessageReq():
                check_input(request.params.input)
                await self.store.load_thread(request.params.thread_id, context)
                await self.attachments.check_message(request.params.input.attachments, context)
            case ThreadsListReq():
                request.params.limit = check_limit(request.params.limit)
            case ItemsListReq():
                request.params.limit = check_limit(request.params.limit)
            case ThreadsRetryAfterItemReq():
                item = await self.store.load_item(
                    request.params.thread_id, request.params.item_id, context
                )
                if not isinstance(item, UserMessageItem):
                    raise RequestError(400, f"item {item.id} is not a user message")
            case ThreadsAddClientToolOutputReq():
                await self._pending_tool_call(request.params.thread_id, context)
            case ThreadsCustomActionReq() | ThreadsSyncCustomActionReq():
                sync = isinstance(request, ThreadsSyncCustomActionReq)
                await self.actions.check_action(request.params, context, sync=sync)
            case ThreadsAddStructuredInputReq():
                await self.actions.check_answers(request.params, context)
            case ItemsFeedbackReq():
                # A lookup per id: bounded, so one request cannot cost thousands of queries.
                item_ids = list(dict.fromkeys(request.params.item_ids))
                if len(item_ids) > MAX_PAGE:
                    raise RequestError(400, f"item_ids: at most {MAX_PAGE} ids per request")
                request.params.item_ids = item_ids
                await self.store.load_thread(request.params.thread_id, context)
                for item_id in item_ids:
                    await self.store.load_item(request.params.thread_id, item_id, context)
            case ThreadsUpdateReq():
                if not request.params.title.strip():
                    raise RequestError(400, "title must not be empty")
                if len(request.params.title) > MAX_TITLE:
                    raise RequestError(400, f"title is longer than {MAX_TITLE} characters")

    async def _process_non_streaming(
        self, request: NonStreamingReq, context: RequestContext
    ) -> bytes:
        # Pages of what the user sees: the SDK filters hidden items out of a page after
        # fetching it, which leaves short (even empty) pages and cursors on unseen items.
        match request:
            case ItemsListReq(params=params):
                page = await self.sql_store.load_visible_items(
                    params.thread_id,
                    params.after,
                    params.limit or DEFAULT_PAGE_SIZE,
                    params.order,
                    context,
                )
                return self._serialize(self.attachments.fresh(page, context))
            case ThreadsGetByIdReq(params=params):
                thread = await self.store.load_thread(params.thread_id, context)
                page = await self.sql_store.load_visible_items(
                    thread.id, None, DEFAULT_PAGE_SIZE, "asc", context
                )
                full = Thread(**thread.model_dump(), items=self.attachments.fresh(page, context))
                return self._serialize(self._to_thread_response(full))
            case ThreadsUpdateReq(params=params):
                thread = await self.store.load_thread(params.thread_id, context)
                thread.title = params.title
                await self.sql_store.update_thread(thread, context)
                return self._serialize(self._to_thread_response(thread))
            case ThreadsDeleteReq(params=params):
                # The owner's check first: another user's replies are left alone.
                await self.store.load_thread(params.thread_id, context)
                return await self._delete_thread(params.thread_id, context)
            case InputTranscribeReq(params=params):
                # The SDK's own base64 decode would turn bad input into a 500.
                audio = decode_audio(params.audio_base64, params.mime_type)
                return self._serialize(await self.transcribe(audio, context))
        return await super()._process_non_streaming(request, context)

    # -- streaming: a producer task per stream, so shutdown can stop it cleanly --

    async def _stream(
        self, queue: ReplyQueue, producer: asyncio.Task[None], slot: Slot
    ) -> AsyncGenerator[bytes, None]:
        """The reply's frames as they come. The queue is unbounded on purpose: a producer
        blocked on a full queue is cancelled outside the SDK's handler, which then never
        saves the partial reply. A reply is bounded by the model's output; that bounds it."""
        try:
            while (frame := await queue.get()) is not None:
                # A reader that fell behind gets what piled up in one write, not one per event.
                frames = [frame]
                size = len(frame)
                while size < COALESCE_BYTES and not queue.empty():
                    if (more := queue.get_nowait()) is None:
                        queue.put_nowait(None)
                        break
                    frames.append(more)
                    size += len(more)
                yield b"".join(frames)
        finally:
            if not producer.done():
                # The client left: stop the run. The producer is a task of its own, cancelled
                # once, so the SDK's cancellation handler can save the partial reply without
                # being cancelled itself; the shield keeps us waiting for that save.
                self.streams.stop([slot], None)
            # And for the lease's release: once a response ends, its thread and its user's
            # place are free on every process.
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHIELDED_SAVE_SECONDS):
                await asyncio.wait([producer])
                await slot.ended.wait()

    async def _produce(
        self,
        request: StreamingReq,
        context: RequestContext,
        queue: ReplyQueue,
        slot: Slot,
    ) -> None:
        """Run the stream into `queue`; it only ever waits inside the SDK's pipeline."""
        try:
            async for event in self._process_streaming_impl(request, context):
                if isinstance(event, ThreadCreatedEvent):
                    self.streams.bind(slot, event.thread.id)  # from now on it can be deleted
                queue.put_nowait(frame(self._serialize(self.attachments.fresh(event, context))))
        except asyncio.CancelledError:
            if slot.stopped_with is not None:  # else the client left: nobody to tell
                queue.put_nowait(self._eventframe(slot.stopped_with))
        except NotFoundError:  # the thread was deleted under a reply that was not stopped
            queue.put_nowait(self._eventframe(DELETED))
        except Exception:
            logger.exception("stream failed")
            queue.put_nowait(self._eventframe(FAILED))
        queue.put_nowait(None)

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: RequestContext
    ) -> None:
        """The SDK's, in one write instead of two: a thousand readers leaving at once
        queue a thousand writes behind one SQLite connection, not two thousand."""
        note_id = self.store.generate_item_id("sdk_hidden_context", thread, context)
        items = stopped_reply(thread.id, pending_items, note_id)
        await self.sql_store.add_thread_items(thread.id, items, context)

    def _eventframe(self, event: ThreadStreamEvent) -> bytes:
        return frame(self._serialize(event))

    async def drain(self, grace: float) -> None:
        """Refuse new streams, let replies in flight finish for `grace` seconds (or until
        `hurry`), then stop them: each keeps what was streamed and ends with a retryable
        `error` event."""
        self.draining = True
        with anyio.move_on_after(0 if self._hurried else grace) as self._grace:
            while running := [slot.ended.wait() for slot in self.streams.live()]:
                await asyncio.gather(*running)
        producers = self.streams.stop(self.streams.live(), RESTARTING)
        if producers:
            await asyncio.wait(producers, timeout=SHIELDED_SAVE_SECONDS)
        with anyio.move_on_after(SHIELDED_SAVE_SECONDS):
            await self.streams.settle()  # every lease freed before the store closes

    def hurry(self) -> None:
        """End `drain`'s wait now (a second Ctrl-C): its replies stop as at the grace."""
        self._hurried = True
        if self._grace is not None:
            self._grace.cancel()

    async def _delete_thread(self, thread_id: str, context: RequestContext) -> bytes:
        """Stop the thread's reply (no tokens spent for nobody), then delete it.

        The delete holds the thread's place meanwhile, so a message waiting for the thread
        finds it gone (404) instead of starting a reply in it.
        """
        producers = self.streams.stop(self.streams.on_thread(thread_id), DELETED)
        held = self.streams.claim(context.user_id, thread_id)
        try:
            if producers:
                await asyncio.wait(producers, timeout=SHIELDED_SAVE_SECONDS)
            await self.store.delete_thread(thread_id, context)
        finally:
            self.streams.end(held)
        return b"{}"

    async def _process_streaming_impl(
        self, request: StreamingReq, context: RequestContext
    ) -> AsyncGenerator[ThreadStreamEvent, None]:
        if not isinstance(request, ThreadsAddClientToolOutputReq):
            async for event in super()._process_streaming_impl(request, context):
                yield event
            return
        # The SDK looks only at the last item; hidden items may follow the pending call.
        thread = await self.store.load_thread(request.params.thread_id, context)
        tool_call = await self._pending_tool_call(thread.id, context)
        tool_call.output = request.params.result
        tool_call.status = "completed"
        await self.store.save_item(thread.id, tool_call, context)
        async for event in self._process_events(
            thread, context, lambda: self.respond(thread, None, context)
        ):
            yield event

    async def _pending_tool_call(
        self, thread_id: str, context: RequestContext
    ) -> ClientToolCallItem:
        page = await self.store.load_thread_items(
            thread_id, None, PENDING_LOOKBACK, "desc", context
        )
        for item in page.data:
            if isinstance(item, (HiddenContextItem, SDKHiddenContextItem)):
                continue
            if isinstance(item, ClientToolCallItem) and item.status == "pending":
                return item
            break
        raise RequestError(400, f"thread {thread_id} has no pending client tool call")

    # -- the agent ------------------------------------------------------------

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        page = await self.store.load_thread_items(
            thread.id, None, self.history_items, "desc", context
        )
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        converter = TripItemConverter(partial(self.attachments.to_model, context=context))
        turn = run_turn(self.agent, page.data[::-1], agent_context, converter, UI_TOOL_NAMES)
        del page  # parsed items held for the whole reply: tens of KB with a long history
        async for event in turn:
            yield event
        if thread.title is None and input_user_message is not None:
            thread.title = short_title(text_of(input_user_message))

    def action(
        self,
        thread: ThreadMetadata,
        action: Action[str, Any],
        sender: WidgetItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        return self.actions.stream(thread, action, sender, context)

    async def sync_action(
        self,
        thread: ThreadMetadata,
        action: Action[str, Any],
        sender: WidgetItem | None,
        context: RequestContext,
    ) -> SyncCustomActionResponse:
        return await self.actions.sync(thread, action, sender, context)

    async def transcribe(
        self, audio_input: AudioInput, context: RequestContext
    ) -> TranscriptionResult:
        if self.dictation is None:
            raise RequestError(400, "input.transcribe is not supported by this server")
        return await self.dictation.transcribe(audio_input)

    async def add_feedback(
        self, thread_id: str, item_ids: list[str], feedback: FeedbackKind, context: RequestContext
    ) -> None:
        await self.sql_store.save_feedback(thread_id, item_ids, feedback, context)


def _restarting() -> RequestError:
    return RequestError(503, "the server is restarting; retry in a few seconds")
