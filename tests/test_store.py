"""The ChatKit Store contract, method by method, on a real database.

Tests taking `store` or `db_url` run on every backend conftest offers (SQLite always,
PostgreSQL when configured); the SQLite schema and packaging tests are in
`test_store_sqlite.py`. The assertions are what a ChatKit user would notice: what comes
back, in which order, and who can see it.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args

import anyio
import pytest
from chatkit.store import NotFoundError, StoreItemType
from chatkit.types import (
    ActiveStatus,
    Annotation,
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    ClientToolCallItem,
    ClosedStatus,
    CustomSummary,
    CustomTask,
    DurationSummary,
    EndOfTurnItem,
    EntitySource,
    FileAttachment,
    FileSource,
    GeneratedImage,
    GeneratedImageItem,
    HiddenContextItem,
    ImageAttachment,
    InferenceOptions,
    LockedStatus,
    Page,
    SDKHiddenContextItem,
    SearchTask,
    StructuredInputAnswer,
    StructuredInputFreeform,
    StructuredInputItem,
    StructuredInputMultipleChoice,
    StructuredInputMultipleChoiceOption,
    TaskItem,
    ThoughtTask,
    Thread,
    ThreadItem,
    ThreadMetadata,
    ToolChoice,
    URLSource,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
    WidgetItem,
    Workflow,
    WorkflowItem,
)
from chatkit.widgets import Card, Text

from tripchat.context import RequestContext
from tripchat.store import SQLiteStore, SQLStore, open_store

pytestmark = pytest.mark.anyio

REPO = Path(__file__).parents[1]
ALICE = RequestContext("alice")
BOB = RequestContext("bob")
T0 = datetime(2025, 5, 1, 9, 30, 0, 123456, tzinfo=UTC)
TABLES = {
    "chatkit_threads",
    "chatkit_items",
    "chatkit_attachments",
    "chatkit_feedback",
    "agent_sessions",
    "agent_messages",
}


class HasId(Protocol):
    @property
    def id(self) -> str: ...


P = TypeVar("P", bound=HasId)


# -- builders and readers -----------------------------------------------------------


async def new_thread(
    store: SQLStore, context: RequestContext = ALICE, **fields: Any
) -> ThreadMetadata:
    """Save a fresh thread, as the server does on threads.create."""
    thread = ThreadMetadata(id=store.generate_thread_id(context), created_at=T0, **fields)
    await store.save_thread(thread, context)
    return thread


def message(thread_id: str, item_id: str, text: str, created_at: datetime = T0) -> ThreadItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=created_at,
        content=[AssistantMessageContent(text=text)],
    )


async def add_messages(store: SQLStore, thread_id: str, count: int) -> list[ThreadItem]:
    """Append `count` messages one after the other; returns them in insertion order."""
    items = [message(thread_id, f"msg_{i:04d}", f"message {i}") for i in range(count)]
    for item in items:
        await store.add_thread_item(thread_id, item, ALICE)
    return items


async def all_items(
    store: SQLStore, thread_id: str, order: str = "asc", context: RequestContext = ALICE
) -> list[ThreadItem]:
    return (await store.load_thread_items(thread_id, None, 10_000, order, context)).data


def shape(page: Page[P]) -> tuple[list[P], bool, str | None]:
    return page.data, page.has_more, page.after


def ids(objects: list[P]) -> list[str]:
    return [o.id for o in objects]


async def walk(load: Callable[[str | None], Awaitable[Page[P]]]) -> tuple[list[P], int]:
    """Follow `after` cursors to the end, as a client scrolling; returns all seen and pages."""
    seen: list[P] = []
    after: str | None = None
    pages = 0
    while True:
        page = await load(after)
        pages += 1
        seen.extend(page.data)
        if not page.has_more:
            assert page.after is None
            return seen, pages
        assert page.after == page.data[-1].id
        after = page.after


def file_attachment(thread_id: str | None, attachment_id: str = "atc_file") -> Attachment:
    return FileAttachment(
        id=attachment_id,
        name="itinerary.pdf",
        mime_type="application/pdf",
        thread_id=thread_id,
        metadata={"bytes": 5120, "storage": {"bucket": "trips"}},
    )


def image_attachment(thread_id: str | None, attachment_id: str = "atc_image") -> Attachment:
    return ImageAttachment(
        id=attachment_id,
        name="beach.png",
        mime_type="image/png",
        thread_id=thread_id,
        preview_url="https://cdn.example.com/beach.png",  # type: ignore[arg-type]
    )


def every_item_type(thread_id: str) -> list[ThreadItem]:
    """One item of each ThreadItem variant, with its optional parts filled in."""
    at = iter(T0 + timedelta(seconds=s) for s in range(100))
    base: dict[str, Any] = {"thread_id": thread_id}
    return [
        UserMessageItem(
            id="msg_user",
            created_at=next(at),
            content=[
                UserMessageTextContent(text="Plan 3 days in Lisbon with "),
                UserMessageTagContent(
                    id="city_lis",
                    text="Lisbon",
                    data={"iata": "LIS", "country": "PT"},
                    group="cities",
                    interactive=True,
                ),
            ],
            attachments=[file_attachment(thread_id), image_attachment(thread_id)],
            quoted_text="cheap flights in May",
            inference_options=InferenceOptions(
                tool_choice=ToolChoice(id="search"), model="gpt-4.1"
            ),
            **base,
        ),
        AssistantMessageItem(
            id="msg_assistant",
            created_at=next(at),
            content=[
                AssistantMessageContent(
                    text="Day 1: Alfama. Día 2: Belém 🚋",
                    annotations=[
                        Annotation(
                            source=URLSource(title="Visit Lisboa", url="https://visitlisboa.com"),
                            index=7,
                        ),
                        Annotation(source=FileSource(title="Guide", filename="guide.pdf")),
                        Annotation(
                            source=EntitySource(title="Belém", id="poi_1", data={"lat": 38.69}),
                            index=20,
                        ),
                    ],
                )
            ],
            **base,
        ),
        ClientToolCallItem(
            id="tc_pending",
            created_at=next(at),
            call_id="call_1",
            name="get_location",
            arguments={"precision": "city"},
            **base,
        ),
        ClientToolCallItem(
            id="tc_completed",
            created_at=next(at),
            status="completed",
            call_id="call_2",
            name="get_location",
            arguments={},
            output={"city": "Lisbon", "coords": [38.72, -9.14]},
            **base,
        ),
        WidgetItem(
            id="msg_widget",
            created_at=next(at),
            widget=Card(key="trip", children=[Text(value="3 days in Lisbon", weight="semibold")]),
            copy_text="3 days in Lisbon",
            **base,
        ),
        GeneratedImageItem(
            id="msg_image",
            created_at=next(at),
            image=GeneratedImage(id="img_1", url="https://cdn.example.com/map.png"),
            **base,
        ),
        StructuredInputItem(
            id="msg_structured",
            created_at=next(at),
            status="answered",
            inputs=[
                StructuredInputMultipleChoice(
                    id="budget",
                    question="Budget?",
                    options=[
                        StructuredInputMultipleChoiceOption(value="low"),
                        StructuredInputMultipleChoiceOption(value="high"),
                    ],
                    multiple=True,
                    answer=StructuredInputAnswer(values=["low"]),
                ),
                StructuredInputFreeform(
                    id="notes",
                    question="Anything else?",
                    description="Optional",
                    answer=StructuredInputAnswer(skipped=True),
                ),
            ],
            **base,
        ),
        WorkflowItem(
            id="wf_1",
            created_at=next(at),
            workflow=Workflow(
                type="custom",
                tasks=[
                    CustomTask(title="Searching flights", icon="search", content="LIS → OPO"),
                    ThoughtTask(title="Thinking", content="Trains", status_indicator="complete"),
                    SearchTask(queries=["trams"], sources=[URLSource(title="t", url="https://t")]),
                ],
                summary=CustomSummary(title="Planned", icon="check"),
                expanded=True,
            ),
            **base,
        ),
        WorkflowItem(
            id="wf_2",
            created_at=next(at),
            workflow=Workflow(type="reasoning", tasks=[], summary=DurationSummary(duration=12)),
            **base,
        ),
        TaskItem(
            id="tsk_1",
            created_at=next(at),
            task=CustomTask(title="Booked", status_indicator="loading"),
            **base,
        ),
        HiddenContextItem(
            id="msg_hidden",
            created_at=next(at),
            content={"preferences": {"seat": "aisle"}, "visited": ["Porto", None, 3]},
            **base,
        ),
        SDKHiddenContextItem(id="shcx_1", created_at=next(at), content="vegetarian", **base),
        EndOfTurnItem(id="msg_end", created_at=next(at), **base),
    ]


# -- round trips ----------------------------------------------------------------------


async def test_every_item_type_round_trips(store: SQLStore) -> None:
    thread = await new_thread(store)
    items = every_item_type(thread.id)
    variants, _field = get_args(ThreadItem)
    assert {type(item) for item in items} == set(get_args(variants))
    for item in items:
        await store.add_thread_item(thread.id, item, ALICE)

    for item in items:
        assert await store.load_item(thread.id, item.id, ALICE) == item
    assert shape(await store.load_thread_items(thread.id, None, 20, "asc", ALICE)) == (
        items,
        False,
        None,
    )


async def test_unusual_text_round_trips(store: SQLStore) -> None:
    """Astral and right-to-left characters, big bodies, naive and offset times."""
    odd = "tab\t «quotes» 'single' \\ \\u0000 \\\\u0000 emoji 🧳🇵🇹 rtl שלום \u2028 end"
    thread = await new_thread(store, title=odd, metadata={odd: [odd]})
    items = [
        message(thread.id, "msg_odd", odd),
        message(thread.id, "msg_big", "x" * 300_000),
        message(thread.id, "msg_naive", "naive", created_at=datetime(2025, 1, 2, 3, 4, 5)),
        message(thread.id, "msg_offset", "+05:30", T0.astimezone(timezone(timedelta(hours=5.5)))),
    ]
    for item in items:
        await store.add_thread_item(thread.id, item, ALICE)
    await store.add_session_items("odd", [{"content": odd}])

    assert await store.load_thread(thread.id, ALICE) == thread
    assert await all_items(store, thread.id) == items
    assert await store.load_session_items("odd", None) == [{"content": odd}]


async def test_nul_is_kept_or_replaced_never_an_error(store: SQLStore) -> None:
    """SQLite keeps U+0000; PostgreSQL's jsonb cannot, so it holds U+FFFD instead."""
    text = "before\x00after"
    stored = text if isinstance(store, SQLiteStore) else "before\ufffdafter"
    thread = await new_thread(store, title=text)
    item = message(thread.id, "msg_nul", text)
    await store.add_thread_item(thread.id, item, ALICE)
    await store.add_session_items("nul", [{"content": text}])

    assert (await store.load_thread(thread.id, ALICE)).title == stored
    assert await store.load_item(thread.id, "msg_nul", ALICE) == message(
        thread.id, "msg_nul", stored
    )
    assert await store.load_session_items("nul", None) == [{"content": stored}]


async def test_an_id_with_nul_is_not_found(store: SQLStore) -> None:
    """A client can send any id; one PostgreSQL text cannot hold is just an unknown id."""
    thread = await new_thread(store)
    await store.add_thread_item(thread.id, message(thread.id, "msg_1", "hi"), ALICE)
    odd = "thr\x00_x"
    lookups = [
        store.load_thread(odd, ALICE),
        store.load_item(thread.id, "msg\x00", ALICE),
        store.load_thread_items(odd, None, 10, "asc", ALICE),
        store.load_thread_items(thread.id, "msg\x00", 10, "asc", ALICE),
        store.load_threads(10, "\x00", "desc", ALICE),
        store.delete_thread(odd, ALICE),
    ]
    for lookup in lookups:
        with pytest.raises(NotFoundError):
            await lookup
    assert len(await all_items(store, thread.id)) == 1


# -- threads ----------------------------------------------------------------------------


async def test_save_thread_twice_updates_title(store: SQLStore) -> None:
    thread = await new_thread(store)
    assert (await store.load_thread(thread.id, ALICE)).title is None

    renamed = thread.model_copy(update={"title": "Lisbon in May"})
    await store.save_thread(renamed, ALICE)

    assert await store.load_thread(thread.id, ALICE) == renamed
    assert (await store.load_threads(10, None, "asc", ALICE)).data == [renamed]


async def test_status_and_metadata_survive(store: SQLStore) -> None:
    locked = await new_thread(
        store,
        title="Locked",
        status=LockedStatus(reason="over quota"),
        allowed_image_domains=["cdn.example.com"],
        metadata={"previous_response_id": "resp_1", "nested": {"n": [1, 2.5, None]}},
    )
    closed = await new_thread(store, status=ClosedStatus(reason=None))
    active = await new_thread(store, status=ActiveStatus())

    for thread in (locked, closed, active):
        assert await store.load_thread(thread.id, ALICE) == thread
    assert (await store.load_threads(10, None, "asc", ALICE)).data == [locked, closed, active]


async def test_save_thread_given_a_full_thread_stores_metadata_only(store: SQLStore) -> None:
    thread_id = store.generate_thread_id(ALICE)
    full = Thread(
        id=thread_id,
        created_at=T0,
        title="With items",
        items=Page(data=[message(thread_id, "msg_inline", "not stored")], has_more=True),
    )
    await store.save_thread(full, ALICE)

    loaded = await store.load_thread(thread_id, ALICE)
    assert type(loaded) is ThreadMetadata
    assert loaded == ThreadMetadata(id=thread_id, created_at=T0, title="With items")
    assert await all_items(store, thread_id) == []
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.path)) as db:
            (data,) = db.execute(
                "SELECT thread_data FROM chatkit_threads WHERE thread_id = ?", (thread_id,)
            ).fetchone()
        assert "items" not in json.loads(data)


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7])
async def test_load_threads_walks_both_orders(store: SQLStore, limit: int) -> None:
    threads = [await new_thread(store, title=f"trip {i}") for i in range(5)]
    await new_thread(store, BOB)
    for order, expected in (("asc", threads), ("desc", threads[::-1])):
        seen, pages = await walk(
            lambda after, order=order: store.load_threads(limit, after, order, ALICE)
        )
        assert seen == expected
        assert pages == math.ceil(len(threads) / limit)


async def test_load_threads_empty_and_boundaries(store: SQLStore) -> None:
    assert shape(await store.load_threads(20, None, "desc", ALICE)) == ([], False, None)

    threads = [await new_thread(store) for _ in range(4)]
    assert shape(await store.load_threads(4, None, "asc", ALICE)) == (threads, False, None)
    first = await store.load_threads(3, None, "desc", ALICE)
    assert shape(first) == (threads[:0:-1], True, threads[1].id)
    last = await store.load_threads(3, first.after, "desc", ALICE)
    assert shape(last) == ([threads[0]], False, None)
    with pytest.raises(NotFoundError):
        await store.load_threads(3, "thr_unknown", "asc", ALICE)


# -- items: upsert, order, pagination -------------------------------------------------------


@pytest.mark.parametrize("method", ["add_thread_item", "save_item"])
async def test_upsert_updates_in_place_and_keeps_position(store: SQLStore, method: str) -> None:
    thread = await new_thread(store)
    items = await add_messages(store, thread.id, 3)
    upsert = getattr(store, method)

    edited = message(thread.id, items[1].id, "edited", created_at=T0 + timedelta(days=1))
    await upsert(thread.id, edited, ALICE)

    assert await all_items(store, thread.id) == [items[0], edited, items[2]]
    assert await store.load_item(thread.id, items[1].id, ALICE) == edited


async def test_add_thread_items_saves_in_order_only_into_the_owners_thread(
    store: SQLStore,
) -> None:
    thread = await new_thread(store)
    items = await add_messages(store, thread.id, 2)
    edited = message(thread.id, items[0].id, "edited")
    added = [message(thread.id, "msg_new_1", "one"), message(thread.id, "msg_new_2", "two")]
    await store.add_thread_items(thread.id, [edited, *added], ALICE)
    # Another user's thread, or one that is gone, takes nothing (and raises nothing).
    await store.add_thread_items(thread.id, [message(thread.id, "msg_bob", "bob")], BOB)
    await store.add_thread_items("thr_unknown", [message("thr_unknown", "msg_x", "x")], ALICE)

    assert await all_items(store, thread.id) == [edited, items[1], *added]
    with pytest.raises(NotFoundError):
        await store.load_item("thr_unknown", "msg_x", ALICE)


async def test_batches_written_at_once_all_land(store: SQLStore) -> None:
    """A thousand readers leaving at once each save their reply's last items together."""
    threads = [await new_thread(store) for _ in range(20)]
    batches = [
        (t.id, [message(t.id, f"msg_{i}_a", "a"), message(t.id, f"msg_{i}_b", "b")])
        for t in threads
        for i in range(25)
    ]
    async with anyio.create_task_group() as group:
        for thread_id, items in batches:
            group.start_soon(store.add_thread_items, thread_id, items, ALICE)
    for thread in threads:
        assert len(await all_items(store, thread.id)) == 50


async def test_empty_thread_page(store: SQLStore) -> None:
    thread = await new_thread(store)
    for order in ("asc", "desc"):
        page = await store.load_thread_items(thread.id, None, 20, order, ALICE)
        assert shape(page) == ([], False, None)


async def test_item_page_boundaries(store: SQLStore) -> None:
    thread = await new_thread(store)
    items = await add_messages(store, thread.id, 6)
    load = store.load_thread_items

    assert shape(await load(thread.id, None, 6, "asc", ALICE)) == (items, False, None)
    first = await load(thread.id, None, 4, "desc", ALICE)
    assert shape(first) == (items[:1:-1], True, items[2].id)
    last = await load(thread.id, first.after, 4, "desc", ALICE)
    assert shape(last) == (items[1::-1], False, None)
    assert shape(await load(thread.id, items[3].id, 2, "asc", ALICE)) == (items[4:], False, None)
    assert shape(await load(thread.id, items[-1].id, 2, "asc", ALICE)) == ([], False, None)
    assert shape(await load(thread.id, items[0].id, 2, "desc", ALICE)) == ([], False, None)


@pytest.mark.parametrize("limit", [1, 3, 7, 25, 26, 100])
async def test_cursor_walk_reproduces_the_whole_thread(store: SQLStore, limit: int) -> None:
    thread = await new_thread(store)
    other = await new_thread(store)
    items = await add_messages(store, thread.id, 25)
    await add_messages(store, other.id, 5)

    for order, expected in (("asc", items), ("desc", items[::-1])):
        seen, pages = await walk(
            lambda after, order=order: store.load_thread_items(
                thread.id, after, limit, order, ALICE
            )
        )
        assert seen == expected
        assert pages == math.ceil(len(items) / limit)


@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_visible_pages_skip_hidden_items_without_counting_them(
    store: SQLStore, limit: int
) -> None:
    thread = await new_thread(store)
    visible: list[ThreadItem] = []
    for n in range(6):
        for hidden in (
            HiddenContextItem(id=f"hid_{n}", thread_id=thread.id, created_at=T0, content={"n": n}),
            SDKHiddenContextItem(id=f"sdk_{n}", thread_id=thread.id, created_at=T0, content="x"),
        ):
            await store.add_thread_item(thread.id, hidden, ALICE)
        item = message(thread.id, f"msg_{n}", f"message {n}")
        await store.add_thread_item(thread.id, item, ALICE)
        visible.append(item)

    for order, expected in (("asc", visible), ("desc", visible[::-1])):
        seen, pages = await walk(
            lambda after, order=order: store.load_visible_items(
                thread.id, after, limit, order, ALICE
            )
        )
        assert seen == expected
        assert pages == math.ceil(len(visible) / limit)  # full pages: no short or empty ones
    assert len(await all_items(store, thread.id)) == 3 * len(visible)  # the SDK still sees all


async def test_order_follows_insertion_not_timestamps(store: SQLStore) -> None:
    thread = await new_thread(store)
    hour, year = timedelta(hours=1), timedelta(days=365)
    stamps = [T0, T0, T0 - hour, T0 - year, T0, T0 + hour]
    # Ids sort backwards too, so neither timestamps nor ids can stand in for the order.
    items = [message(thread.id, f"msg_{'zyxwvu'[i]}", f"m{i}", at) for i, at in enumerate(stamps)]
    for item in items:
        await store.add_thread_item(thread.id, item, ALICE)

    assert await all_items(store, thread.id, "asc") == items
    assert await all_items(store, thread.id, "desc") == items[::-1]
    seen, _ = await walk(lambda after: store.load_thread_items(thread.id, after, 2, "asc", ALICE))
    assert seen == items


async def test_unknown_cursor_is_not_found(store: SQLStore) -> None:
    thread = await new_thread(store)
    other = await new_thread(store)
    await add_messages(store, thread.id, 3)
    foreign = message(other.id, "msg_elsewhere", "in the other thread")
    await store.add_thread_item(other.id, foreign, ALICE)

    for after in ("msg_unknown", foreign.id):
        for order in ("asc", "desc"):
            with pytest.raises(NotFoundError):
                await store.load_thread_items(thread.id, after, 2, order, ALICE)


async def test_invalid_order_or_limit_is_rejected(store: SQLStore) -> None:
    thread = await new_thread(store)
    with pytest.raises(ValueError, match="order"):
        await store.load_thread_items(thread.id, None, 10, "sideways", ALICE)
    with pytest.raises(ValueError, match="limit"):
        await store.load_threads(0, None, "asc", ALICE)


# -- unknown ids and deletion ------------------------------------------------------------


async def test_unknown_ids_raise_not_found(store: SQLStore) -> None:
    thread = await new_thread(store)
    item = message("thr_unknown", "msg_1", "hi")
    calls: list[Awaitable[Any]] = [
        store.load_thread("thr_unknown", ALICE),
        store.load_item(thread.id, "msg_unknown", ALICE),
        store.load_item("thr_unknown", "msg_unknown", ALICE),
        store.load_attachment("atc_unknown", ALICE),
        store.delete_thread("thr_unknown", ALICE),
        store.delete_attachment("atc_unknown", ALICE),
        store.load_thread_items("thr_unknown", None, 10, "asc", ALICE),
        store.load_thread_items("thr_unknown", None, 10, "desc", ALICE),
        store.add_thread_item("thr_unknown", item, ALICE),
        store.save_item("thr_unknown", item, ALICE),
        store.delete_thread_item("thr_unknown", "msg_1", ALICE),
        store.save_feedback("thr_unknown", ["msg_1"], "positive", ALICE),
        store.load_feedback("thr_unknown", ALICE),
        store.save_attachment(file_attachment("thr_unknown"), ALICE),
    ]
    for call in calls:
        with pytest.raises(NotFoundError):
            await call
    assert (await store.load_threads(10, None, "asc", ALICE)).data == [thread]


def sqlite_rows(path: str, table: str, thread_id: str) -> int:
    """Count a thread's rows straight from the SQLite file, behind the store's back."""
    with closing(sqlite3.connect(path)) as db:
        sql = f"SELECT COUNT(*) FROM {table} WHERE thread_id = ?"
        return int(db.execute(sql, (thread_id,)).fetchone()[0])


async def test_delete_thread_cascades(store: SQLStore) -> None:
    thread = await new_thread(store, title="doomed")
    kept = await new_thread(store, title="kept")
    items = await add_messages(store, thread.id, 3)
    kept_items = await add_messages(store, kept.id, 2)
    for attachment in (file_attachment(thread.id), image_attachment(kept.id)):
        await store.save_attachment(attachment, ALICE)
    await store.save_feedback(thread.id, [items[0].id], "positive", ALICE)
    await store.save_feedback(kept.id, [kept_items[0].id], "negative", ALICE)

    await store.delete_thread(thread.id, ALICE)

    for gone in (
        store.load_thread(thread.id, ALICE),
        store.load_attachment("atc_file", ALICE),
        store.delete_thread(thread.id, ALICE),
    ):
        with pytest.raises(NotFoundError):
            await gone
    # A save of the deleted id (the SDK's end-of-turn save racing the delete) is refused:
    # the thread, its items and its feedback stay gone.
    with pytest.raises(NotFoundError):
        await store.save_thread(thread, ALICE)
    with pytest.raises(NotFoundError):
        await store.load_thread(thread.id, ALICE)
    # The other thread is untouched.
    assert await all_items(store, kept.id) == kept_items
    assert await store.load_feedback(kept.id, ALICE) == {kept_items[0].id: "negative"}
    assert await store.load_attachment("atc_image", ALICE) == image_attachment(kept.id)

    if isinstance(store, SQLiteStore):
        for table in ("chatkit_items", "chatkit_attachments", "chatkit_feedback"):
            assert sqlite_rows(store.path, table, thread.id) == 0, table
        assert sqlite_rows(store.path, "chatkit_items", kept.id) == 2


async def test_delete_thread_item(store: SQLStore) -> None:
    thread = await new_thread(store)
    items = await add_messages(store, thread.id, 3)
    await store.save_feedback(thread.id, [items[1].id], "positive", ALICE)

    await store.delete_thread_item(thread.id, items[1].id, ALICE)
    await store.delete_thread_item(thread.id, items[1].id, ALICE)
    await store.delete_thread_item(thread.id, "msg_never_saved", ALICE)

    assert await all_items(store, thread.id) == [items[0], items[2]]
    assert await store.load_feedback(thread.id, ALICE) == {}
    with pytest.raises(NotFoundError):
        await store.load_item(thread.id, items[1].id, ALICE)


# -- attachments and feedback ---------------------------------------------------------------


async def test_attachments_save_load_delete(store: SQLStore) -> None:
    thread = await new_thread(store)
    for attachment in (file_attachment(None), image_attachment(thread.id)):
        await store.save_attachment(attachment, ALICE)
        assert await store.load_attachment(attachment.id, ALICE) == attachment
        await store.delete_attachment(attachment.id, ALICE)
        with pytest.raises(NotFoundError):
            await store.load_attachment(attachment.id, ALICE)
        with pytest.raises(NotFoundError):
            await store.delete_attachment(attachment.id, ALICE)


async def test_attachment_upsert_binds_it_to_a_thread(store: SQLStore) -> None:
    thread = await new_thread(store)
    await store.save_attachment(file_attachment(None), ALICE)

    bound = file_attachment(thread.id).model_copy(update={"name": "renamed.pdf"})
    await store.save_attachment(bound, ALICE)
    assert await store.load_attachment(bound.id, ALICE) == bound

    await store.delete_thread(thread.id, ALICE)
    with pytest.raises(NotFoundError):
        await store.load_attachment(bound.id, ALICE)


async def test_feedback(store: SQLStore) -> None:
    thread = await new_thread(store)
    items = await add_messages(store, thread.id, 3)
    assert await store.load_feedback(thread.id, ALICE) == {}

    await store.save_feedback(thread.id, [items[0].id, items[1].id], "positive", ALICE)
    await store.save_feedback(thread.id, [items[1].id], "negative", ALICE)
    expected = {items[0].id: "positive", items[1].id: "negative"}
    assert await store.load_feedback(thread.id, ALICE) == expected

    with pytest.raises(NotFoundError):
        await store.save_feedback(thread.id, ["msg_unknown"], "positive", ALICE)
    other = await new_thread(store)
    with pytest.raises(NotFoundError):  # an item of another thread is unknown here
        await store.save_feedback(other.id, [items[2].id], "positive", ALICE)
    assert await store.load_feedback(other.id, ALICE) == {}
    assert await store.load_feedback(thread.id, ALICE) == expected


# -- agent session memory -----------------------------------------------------------------


async def test_session_memory(store: SQLStore) -> None:
    turns = [{"role": "user", "content": f"turn {i} — ü"} for i in range(5)]
    other = [{"role": "user", "content": "other session"}]
    assert await store.load_session_items("s1", None) == []
    assert await store.pop_session_item("s1") is None

    await store.add_session_items("s1", turns[:2])
    await store.add_session_items("s2", other)
    await store.add_session_items("s1", turns[2:])

    assert await store.load_session_items("s1", None) == turns
    assert await store.load_session_items("s1", 2) == turns[3:]
    assert await store.load_session_items("s1", 10) == turns
    assert await store.pop_session_item("s1") == turns[4]
    assert await store.load_session_items("s1", None) == turns[:4]

    await store.clear_session("s1")
    assert await store.load_session_items("s1", None) == []
    assert await store.load_session_items("s2", None) == other
    await store.add_session_items("s1", turns[:1])
    assert await store.load_session_items("s1", None) == turns[:1]


# -- ids ------------------------------------------------------------------------------------


async def test_generated_ids_are_unique_128_bit(store: SQLStore) -> None:
    thread = ThreadMetadata(id="thr_x", created_at=T0)
    thread_ids = {store.generate_thread_id(ALICE) for _ in range(100_000)}
    item_ids = {store.generate_item_id("message", thread, ALICE) for _ in range(100_000)}
    assert len(thread_ids) == len(item_ids) == 100_000
    assert all(re.fullmatch(r"thr_[0-9a-f]{32}", i) for i in thread_ids)
    assert all(re.fullmatch(r"msg_[0-9a-f]{32}", i) for i in item_ids)
    kinds: tuple[StoreItemType, ...] = get_args(StoreItemType)
    for kind in kinds:
        assert re.fullmatch(r"[a-z]+_[0-9a-f]{32}", store.generate_item_id(kind, thread, ALICE))


# -- isolation between users ---------------------------------------------------------------


async def test_another_users_thread_is_not_found(store: SQLStore) -> None:
    thread = await new_thread(store, title="alice's trip")
    items = await add_messages(store, thread.id, 3)
    await store.save_feedback(thread.id, [items[0].id], "positive", ALICE)
    bobs = await new_thread(store, BOB, title="bob's trip")

    calls: list[Awaitable[Any]] = [
        store.load_thread(thread.id, BOB),
        store.save_thread(thread.model_copy(update={"title": "hijacked"}), BOB),
        store.delete_thread(thread.id, BOB),
        store.load_thread_items(thread.id, None, 10, "asc", BOB),
        store.load_thread_items(thread.id, items[0].id, 10, "asc", BOB),
        store.load_thread_items(bobs.id, items[0].id, 10, "asc", BOB),
        store.load_threads(10, thread.id, "desc", BOB),
        store.add_thread_item(thread.id, message(thread.id, "msg_bob", "bob was here"), BOB),
        store.save_item(thread.id, message(thread.id, items[0].id, "overwritten"), BOB),
        store.load_item(thread.id, items[0].id, BOB),
        store.delete_thread_item(thread.id, items[0].id, BOB),
        store.save_feedback(thread.id, [items[0].id], "negative", BOB),
        store.load_feedback(thread.id, BOB),
    ]
    for call in calls:
        with pytest.raises(NotFoundError):
            await call

    assert (await store.load_threads(10, None, "desc", BOB)).data == [bobs]
    assert (await store.load_threads(10, None, "desc", ALICE)).data == [thread]
    assert await store.load_thread(thread.id, ALICE) == thread
    assert await all_items(store, thread.id) == items
    assert await store.load_feedback(thread.id, ALICE) == {items[0].id: "positive"}


async def test_another_users_attachment_is_not_found(store: SQLStore) -> None:
    thread = await new_thread(store)
    attachment = file_attachment(thread.id)
    await store.save_attachment(attachment, ALICE)
    await new_thread(store, BOB)

    calls: list[Awaitable[Any]] = [
        store.load_attachment(attachment.id, BOB),
        store.delete_attachment(attachment.id, BOB),
        store.save_attachment(file_attachment(None).model_copy(update={"name": "bob"}), BOB),
        store.save_attachment(image_attachment(thread.id, "atc_bob"), BOB),
    ]
    for call in calls:
        with pytest.raises(NotFoundError):
            await call

    assert await store.load_attachment(attachment.id, ALICE) == attachment
    with pytest.raises(NotFoundError):
        await store.load_attachment("atc_bob", BOB)


# -- durability and concurrency ------------------------------------------------------------


async def test_data_survives_close_and_reopen(db_url: str) -> None:
    async with await open_store(db_url) as first:
        thread = await new_thread(first, title="durable")
        items = every_item_type(thread.id)
        for item in items:
            await first.add_thread_item(thread.id, item, ALICE)
        attachment = file_attachment(thread.id, f"atc_{thread.id}")
        await first.save_attachment(attachment, ALICE)
        await first.save_feedback(thread.id, ["msg_user"], "positive", ALICE)
        await first.add_session_items(thread.id, [{"role": "user", "content": "hi"}])

    async with await open_store(db_url) as second:
        assert await second.load_thread(thread.id, ALICE) == thread
        assert await all_items(second, thread.id) == items
        assert await second.load_attachment(attachment.id, ALICE) == attachment
        assert await second.load_feedback(thread.id, ALICE) == {"msg_user": "positive"}
        memory = await second.load_session_items(thread.id, None)
        assert memory == [{"role": "user", "content": "hi"}]


async def test_concurrent_writers_and_readers(store: SQLStore) -> None:
    threads = [await new_thread(store) for _ in range(30)]
    writers, per_writer = 300, 4
    errors: list[Exception] = []

    async def write(writer: int) -> None:
        thread_id = threads[writer % len(threads)].id
        for n in range(per_writer):
            item = message(thread_id, f"msg_{writer}_{n}", "")
            await store.add_thread_item(thread_id, item, ALICE)

    async def read(reader: int) -> None:
        thread_id = threads[reader % len(threads)].id
        for _ in range(3):
            seen, _pages = await walk(
                lambda after: store.load_thread_items(thread_id, after, 3, "desc", ALICE)
            )
            assert len(set(ids(seen))) == len(seen)

    async def guarded(job: Callable[[int], Awaitable[None]], n: int) -> None:
        try:
            await job(n)
        except Exception as exc:  # kept, so every failure is reported rather than the first
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(writers):
            tg.start_soon(guarded, write, n)
            if n % 5 == 0:
                tg.start_soon(guarded, read, n)

    assert errors == []
    for t, thread in enumerate(threads):
        stored = ids(await all_items(store, thread.id))
        mine = range(t, writers, len(threads))
        assert sorted(stored) == sorted(f"msg_{w}_{n}" for w in mine for n in range(per_writer))
        for w in mine:  # each writer's items come back in the order it wrote them
            assert [i for i in stored if i.startswith(f"msg_{w}_")] == [
                f"msg_{w}_{n}" for n in range(per_writer)
            ]
        assert ids(await all_items(store, thread.id, "desc")) == stored[::-1]


async def test_the_secret_key_is_made_once_and_shared(db_url: str) -> None:
    """Processes on one database sign URLs alike, and a restart keeps the key."""
    async with await open_store(db_url) as one, await open_store(db_url) as two:
        keys = [await one.secret_key(), await two.secret_key(), await one.secret_key()]
    async with await open_store(db_url) as again:
        keys.append(await again.secret_key())
    assert len(keys[0]) == 32
    assert keys == [keys[0]] * 4


async def test_two_stores_on_one_database_lose_nothing(db_url: str) -> None:
    """Two stores opened separately on one database stand in for two processes."""
    names, per_name = ("one", "two", "uno", "dos"), 50
    async with await open_store(db_url) as one, await open_store(db_url) as two:
        threads = [await new_thread(one) for _ in range(4)]

        async def write(store: SQLStore, name: str) -> None:
            for n in range(per_name):
                thread_id = threads[n % len(threads)].id
                item = message(thread_id, f"msg_{name}_{n}", name)
                await store.add_thread_item(thread_id, item, ALICE)
                await store.add_session_items(f"{thread_id}_session", [{"name": name, "n": n}])

        async with anyio.create_task_group() as tg:
            for store, name in zip((one, two, one, two), names, strict=False):
                tg.start_soon(write, store, name)

        for t, thread in enumerate(threads):
            expected = sorted(f"msg_{name}_{n}" for name in names for n in range(t, per_name, 4))
            for reader in (one, two):
                assert sorted(ids(await all_items(reader, thread.id))) == expected
                memory = await reader.load_session_items(f"{thread.id}_session", None)
                assert len(memory) == len(expected)
