"""The reference: what the chatkit-python docs and samples show a user writing.

A FastAPI app with `@app.post("/chatkit")` handing the body to `ChatKitServer.process`,
a plain in-memory `Store` (dicts, no copies, no ownership), and a `respond` that runs
the SAME agent as tripchat (`create_trip_planner_agent`: the same tools, instructions and
model settings, on the stock `openai` client the docs use) through `Runner.run_streamed` and
`stream_agent_response`. Served by uvicorn with its defaults:

    uvicorn --app-dir bench reference_app:app --host 127.0.0.1 --port 8002

`GET /healthz` is the only addition, so the bench can tell when it is up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agents import Runner
from chatkit.agents import AgentContext, simple_to_agent_input, stream_agent_response
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    Attachment,
    Page,
    ThreadItem,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from tripchat.agent import create_trip_planner_agent, openai_client
from tripchat.config import Settings

Context = dict[str, Any]
HISTORY_ITEMS = 40  # tripchat's default CHATKIT_HISTORY_ITEMS


class MemoryStore(Store[Context]):
    """Threads and their items in dicts, as the docs' examples keep them."""

    def __init__(self) -> None:
        self.threads: dict[str, ThreadMetadata] = {}
        self.items: dict[str, list[ThreadItem]] = {}
        self.attachments: dict[str, Attachment] = {}

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        if thread_id not in self.threads:
            raise NotFoundError(f"Thread {thread_id} not found")
        return self.threads[thread_id]

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        self.threads[thread.id] = thread
        self.items.setdefault(thread.id, [])

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        return _page(list(self.threads.values()), limit, after, order)

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        self.threads.pop(thread_id, None)
        self.items.pop(thread_id, None)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        return _page(self.items.get(thread_id, []), limit, after, order)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        await self.save_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        items = self.items.setdefault(thread_id, [])
        for index, existing in enumerate(items):
            if existing.id == item.id:
                items[index] = item
                return
        items.append(item)

    async def load_item(self, thread_id: str, item_id: str, context: Context) -> ThreadItem:
        for item in self.items.get(thread_id, []):
            if item.id == item_id:
                return item
        raise NotFoundError(f"Item {item_id} not found")

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Context) -> None:
        items = self.items.get(thread_id, [])
        items[:] = [item for item in items if item.id != item_id]

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        self.attachments[attachment.id] = attachment

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        if attachment_id not in self.attachments:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return self.attachments[attachment_id]

    async def delete_attachment(self, attachment_id: str, context: Context) -> None:
        self.attachments.pop(attachment_id, None)


def _page(rows: list[Any], limit: int, after: str | None, order: str) -> Page[Any]:
    ordered = list(reversed(rows)) if order == "desc" else list(rows)
    ids = [row.id for row in ordered]
    start = ids.index(after) + 1 if after in ids else 0
    chunk = ordered[start : start + limit]
    has_more = start + limit < len(ordered)
    return Page(data=chunk, has_more=has_more, after=chunk[-1].id if has_more else None)


class ReferenceServer(ChatKitServer[Context]):
    """The docs' server: recent history in, the agent's stream out."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        settings = Settings.from_env()
        # The stock `openai` client, as the docs' app has (tripchat's default is leaner).
        self.agent = create_trip_planner_agent(settings, openai_client(settings, lean=False))

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Context
    ) -> AsyncIterator[ThreadStreamEvent]:
        page = await self.store.load_thread_items(thread.id, None, HISTORY_ITEMS, "desc", context)
        items = list(reversed(page.data))
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        result = Runner.run_streamed(
            self.agent, await simple_to_agent_input(items), context=agent_context
        )
        async for event in stream_agent_response(agent_context, result):
            yield event


app = FastAPI()
server = ReferenceServer()


@app.post("/chatkit")
async def chatkit(request: Request) -> Response:
    """The docs' endpoint, verbatim in shape."""
    result = await server.process(await request.body(), {})
    if isinstance(result, StreamingResult):
        return StreamingResponse(result, media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Readiness for the bench."""
    return {"status": "ok"}
