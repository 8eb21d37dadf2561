"""Attachments and dictation through the app in-process, on SQLite and PostgreSQL.

Each test does what the ChatKit web client does: `attachments.create`, a multipart POST
of the file to the upload descriptor's URL (no user header: the URL is signed), then a
message naming the attachment; or a direct POST to /chatkit/files. The scripted model
records what reached it. Over real HTTP/1.1 and HTTP/2: tests/test_attachments_http.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from chatkit.types import Attachment, ThreadStreamEvent
from conftest import empty_postgres
from openai_mock import OpenAIMock, RecordedRequest
from PIL import Image
from pydantic import TypeAdapter
from test_asgi import Client, Serve, error_message, http_scope, running_app
from test_server import request, user_input

from tripchat.attachments import Attachments
from tripchat.config import Settings
from tripchat.context import RequestContext
from tripchat.migrate import migrate
from tripchat.signing import Signer
from tripchat.store import blobs, open_store

pytestmark = pytest.mark.anyio

ATTACHMENT: TypeAdapter[Attachment] = TypeAdapter(Attachment)
EVENT: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)
BOB = "bob"


# -- files ------------------------------------------------------------------------------------


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    """A real PNG of that size."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def pdf(text: str) -> bytes:
    """A one-page PDF whose page shows `text` (readable by pypdf)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


BOOKING = "Booking LIS-2291: TAP TP1351 Lisbon 12 May 2026 08:40"


# -- the app on each backend -----------------------------------------------------------------


@pytest.fixture
async def serve(db_url: str, openai_mock: OpenAIMock) -> Serve:
    """The app on this backend (an empty database) with some settings changed."""
    if not db_url.startswith("sqlite:"):
        await empty_postgres(db_url)
    settings = Settings(
        db_url=db_url,
        openai_base_url=openai_mock.base_url,
        openai_api_key="test",
        model_max_retries=0,
        tracing=False,
    )
    return lambda **overrides: running_app(replace(settings, **overrides))


@pytest.fixture
async def client(serve: Serve) -> AsyncIterator[Client]:
    async with serve() as running:
        yield running


def attachments_of(client: Client) -> Attachments:
    found: Attachments = client.app.state.server.attachments
    return found


# -- what the web client does -----------------------------------------------------------------


async def create(
    client: Client, name: str, data: bytes, mime: str, user: str = "alice"
) -> dict[str, Any]:
    """attachments.create, as the composer does when a file is dropped in."""
    params = {"name": name, "size": len(data), "mime_type": mime}
    created: dict[str, Any] = await client.json(request("attachments.create", **params), user)
    ATTACHMENT.validate_python(created)
    return created


async def post_file(
    client: Client, url: str, name: str, data: bytes, mime: str, **headers: str
) -> httpx.Response:
    """The multipart POST of a file with field `file`, as the browser's FormData sends it."""
    files = {"file": (name, data, mime)}
    return await client.http.post(url, files=files, headers=headers)


async def attach(
    client: Client, name: str, data: bytes, mime: str, user: str = "alice"
) -> dict[str, Any]:
    """Two-phase: create, then upload to the signed URL without any user header."""
    created = await create(client, name, data, mime, user)
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "POST"
    response = await post_file(client, descriptor["url"], name, data, mime)
    assert response.status_code == 200, response.text
    uploaded: dict[str, Any] = response.json()
    assert uploaded["id"] == created["id"] and "upload_descriptor" not in uploaded
    return uploaded


async def send(
    client: Client, text: str, attachment_ids: list[str], user: str = "alice"
) -> list[dict[str, Any]]:
    """threads.create with the attachments; the stream's events, validated."""
    body = request("threads.create", input=user_input(text, attachment_ids))
    events = await client.stream(body, user)
    for event in events:
        EVENT.validate_python(event)
    assert events[-1]["type"] != "error", events[-1]
    return events


def model_request(mock: OpenAIMock, text: str) -> RecordedRequest:
    for record in mock.requests:
        if text in json.dumps(record.body):
            return record
    raise AssertionError(f"the model never saw {text!r}")


def user_item(events: list[dict[str, Any]]) -> dict[str, Any]:
    for event in events:
        if event["type"] == "thread.item.done" and event["item"]["type"] == "user_message":
            item: dict[str, Any] = event["item"]
            return item
    raise AssertionError("no user message in the stream")


async def chunk_rows(client: Client) -> int:
    row = await client.store._fetchone("SELECT COUNT(*) FROM chatkit_attachment_chunks")
    assert row is not None
    return int(row[0])


def local(url: str) -> str:
    """A URL the in-process client can fetch (it is absolute on the app's host)."""
    parts = urlsplit(url)
    assert parts.netloc == "test", url
    return f"{parts.path}?{parts.query}"


# -- the whole path -----------------------------------------------------------------------------


async def test_a_png_and_a_pdf_reach_the_model_and_the_preview_loads(
    client: Client, openai_mock: OpenAIMock
) -> None:
    photo, booking = png(3000, 1500), pdf(BOOKING)
    image = await attach(client, "tram.png", photo, "image/png")
    document = await attach(client, "booking.pdf", booking, "application/pdf")
    assert image["type"] == "image" and document["type"] == "file"

    events = await send(client, "plan around these [tokens 3]", [image["id"], document["id"]])
    sent = user_item(events)
    assert [a["id"] for a in sent["attachments"]] == [image["id"], document["id"]]

    media = model_request(openai_mock, "plan around these").media
    assert [m["type"] for m in media] == ["input_image", "input_file"]
    # Scaled to the model's 2048 px and re-encoded; the PDF goes as it was uploaded.
    assert media[0]["dimensions"] == [2048, 1024] and media[0]["mime"] == "image/jpeg"
    assert media[1]["mime"] == "application/pdf" and media[1]["filename"] == "booking.pdf"
    assert media[1]["sha256"] == hashlib.sha256(booking).hexdigest()

    # The browser's <img>: no user header, the signed URL alone.
    preview = await client.http.get(local(sent["attachments"][0]["preview_url"]))
    assert preview.status_code == 200
    assert preview.content == photo
    assert preview.headers["content-type"] == "image/png"
    assert preview.headers["x-content-type-options"] == "nosniff"
    assert "private" in preview.headers["cache-control"]


async def test_a_small_image_goes_to_the_model_as_uploaded(
    client: Client, openai_mock: OpenAIMock
) -> None:
    photo = png(40, 30)
    image = await attach(client, "small.png", photo, "image/png")
    await send(client, "small one [tokens 1]", [image["id"]])
    (media,) = model_request(openai_mock, "small one").media
    assert media["sha256"] == hashlib.sha256(photo).hexdigest() and media["mime"] == "image/png"


async def test_direct_upload_of_a_text_file_inlines_it_for_the_model(
    client: Client, openai_mock: OpenAIMock
) -> None:
    wishes = "# Wishes\n- a fado night\n- the tram 28\n"
    response = await post_file(
        client,
        "/chatkit/files",
        "wishes.md",
        wishes.encode(),
        "text/markdown",
        **{"X-User-Id": "alice"},
    )
    assert response.status_code == 200, response.text
    attachment = ATTACHMENT.validate_python(response.json())
    assert attachment.type == "file" and attachment.upload_descriptor is None
    await send(client, "my wishes [tokens 1]", [attachment.id])
    body = json.dumps(model_request(openai_mock, "my wishes").body)
    assert "a fado night" in body and "wishes.md" in body


async def test_a_message_of_attachments_alone_is_accepted(
    client: Client, openai_mock: OpenAIMock
) -> None:
    image = await attach(client, "only.png", png(10, 10), "image/png")
    body = request(
        "threads.create",
        input={"content": [], "attachments": [image["id"]], "inference_options": {}},
    )
    events = await client.stream(body)
    assert events[-1]["type"] != "error"
    assert any(r.media for r in openai_mock.requests)


async def test_items_come_back_with_fresh_preview_urls(client: Client) -> None:
    image = await attach(client, "fresh.png", png(8, 8), "image/png")
    events = await send(client, "fresh [tokens 1]", [image["id"]])
    thread_id = events[0]["thread"]["id"]
    attachments = attachments_of(client)
    key = await client.store.secret_key()
    # Signed an hour later: every page of items carries URLs signed now.
    attachments.signer = Signer(key, clock=lambda: time.time() + 3600)
    thread = await client.json(request("threads.get_by_id", thread_id=thread_id))
    items = await client.json(request("items.list", thread_id=thread_id))
    for page in (thread["items"], items):
        (message,) = [i for i in page["data"] if i["type"] == "user_message"]
        url = message["attachments"][0]["preview_url"]
        assert url != image["preview_url"]
        assert (await client.http.get(local(url))).status_code == 200


# -- ownership, signatures -----------------------------------------------------------------------


async def test_another_users_attachment_is_missing_to_them(client: Client) -> None:
    image = await attach(client, "mine.png", png(8, 8), "image/png")
    for body in (
        request("attachments.delete", attachment_id=image["id"]),
        request("threads.create", input=user_input("use it", [image["id"]])),
    ):
        message = error_message(await client.post(body, BOB), 404)
        assert image["id"] in message
    # Bob's message naming an attachment that does not exist reads the same.
    missing = error_message(
        await client.post(request("threads.create", input=user_input("x", ["atc_nope"])), BOB),
        404,
    )
    assert missing.replace("atc_nope", image["id"]) == message
    # Still Alice's, and still usable by her.
    await send(client, "mine [tokens 1]", [image["id"]])


async def test_signed_urls_refuse_tampering_expiry_and_the_wrong_purpose(client: Client) -> None:
    data = png(8, 8)
    created = await create(client, "a.png", data, "image/png")
    upload, preview = created["upload_descriptor"]["url"], created["preview_url"]
    other = await create(client, "b.png", data, "image/png")
    bad = [
        upload.replace("signature=", "signature=0"),
        upload.replace(created["id"], other["id"]),
        preview.replace("/preview?", "/upload?"),  # a preview URL cannot upload
        upload.split("?")[0],
    ]
    for url in bad:
        refused = await post_file(client, local(url), "a.png", data, "image/png")
        assert "expired or is not valid" in error_message(refused, 403)
    # An upload URL signed two hours ago has expired.
    attachments = attachments_of(client)
    key = await client.store.secret_key()
    attachments.signer = Signer(key, clock=lambda: time.time() - 7200)
    stale = (await create(client, "c.png", data, "image/png"))["upload_descriptor"]["url"]
    attachments.signer = Signer(key)
    error_message(await post_file(client, local(stale), "c.png", data, "image/png"), 403)
    ok = await post_file(client, local(upload), "a.png", data, "image/png")
    assert ok.status_code == 200
    tampered = preview.replace("expires=", "expires=9")
    error_message(await client.http.get(local(tampered)), 403)


async def test_a_second_upload_to_the_same_url_is_refused(client: Client) -> None:
    data = png(8, 8)
    created = await create(client, "once.png", data, "image/png")
    url = local(created["upload_descriptor"]["url"])
    assert (await post_file(client, url, "once.png", data, "image/png")).status_code == 200
    again = await post_file(client, url, "once.png", png(9, 9), "image/png")
    assert "already uploaded" in error_message(again, 409)
    preview = await client.http.get(local(created["preview_url"]))
    assert preview.content == data


# -- limits and bad files -----------------------------------------------------------------------


async def test_an_oversize_upload_is_413_and_leaves_nothing(serve: Serve) -> None:
    async with serve(max_upload_bytes=64 * 1024) as client:
        big = b"x" * (200 * 1024)
        declared = await client.post(
            request("attachments.create", name="big.txt", size=len(big), mime_type="text/plain")
        )
        assert "larger than 65536 bytes" in error_message(declared, 413)
        # A client that declares less than it sends is stopped while it streams.
        created = await create(client, "big.txt", b"x" * 100, "text/plain")
        url = local(created["upload_descriptor"]["url"])
        error_message(await post_file(client, url, "big.txt", big, "text/plain"), 413)
        direct = await post_file(client, "/chatkit/files", "big.txt", big, "text/plain")
        error_message(direct, 413)
        assert await chunk_rows(client) == 0
        not_sent = await client.post(
            request("threads.create", input=user_input("x", [created["id"]]))
        )
        assert "has not been uploaded" in error_message(not_sent, 400)
        # The URL still takes a file that fits.
        fits = await post_file(client, url, "big.txt", b"fits", "text/plain")
        assert fits.status_code == 200


MISMATCHES = {
    "pdf named png": ("fake.png", pdf("x"), "image/png", 400, "does not match"),
    "png named pdf": ("fake.pdf", png(4, 4), "application/pdf", 400, "does not match"),
    "binary named text": ("notes.txt", b"\x00\x01\x02 binary", "text/plain", 400, "binary"),
    "latin-1 as text": ("notes.txt", "café".encode("latin-1"), "text/plain", 400, "UTF-8"),
    "png named json": ("data.json", png(4, 4), "application/json", 400, "does not match"),
    "text named calendar": ("trip.ics", b"hello there", "text/calendar", 400, "iCalendar"),
    "zip": ("x.zip", b"PK\x03\x04zip", "application/zip", 415, "not supported"),
    "empty": ("empty.txt", b"", "text/plain", 400, "empty"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
async def test_a_file_that_is_not_its_type_is_refused(client: Client, case: str) -> None:
    name, data, mime, status, why = MISMATCHES[case]
    response = await post_file(client, "/chatkit/files", name, data, mime, **{"X-User-Id": "alice"})
    assert why in error_message(response, status)
    assert await chunk_rows(client) == 0
    row = await client.store._fetchone("SELECT COUNT(*) FROM chatkit_attachments")
    assert row is not None and row[0] == 0


async def test_a_refusal_after_the_whole_body_is_answered_at_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file found wrong only at its end (here: empty) has no body left to drain: the 400
    must not wait for the drain's time limit (the client, its body sent, waits for us)."""
    monkeypatch.setattr("tripchat.asgi.DISCARD_SECONDS", 3600.0)
    with anyio.fail_after(60):
        response = await post_file(
            client, "/chatkit/files", "empty.txt", b"", "text/plain", **{"X-User-Id": "alice"}
        )
    assert "empty" in error_message(response, 400)


async def test_good_files_of_every_allowed_type_are_taken(client: Client) -> None:
    files = {
        "a.png": (png(4, 4), "image/png"),
        "a.jpg": (b"\xff\xd8\xff\xe0 jpeg", "image/jpeg"),
        "a.gif": (b"GIF89a gif", "image/gif"),
        "a.webp": (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        "a.pdf": (pdf("ok"), "application/pdf"),
        "a.txt": ("plain ✓".encode(), "text/plain"),
        "a.md": (b"# title", ""),  # some browsers send no type for .md
        "a.csv": (b"day,city\n1,Lisbon\n", "text/csv"),
        "a.json": (b' {"flight": "TP1351"}', "application/json"),
        "a.ics": (b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "text/calendar"),
    }
    for name, (data, mime) in files.items():
        response = await post_file(
            client, "/chatkit/files", name, data, mime, **{"X-User-Id": "alice"}
        )
        assert response.status_code == 200, (name, response.text)


async def test_message_checks_before_streaming(client: Client) -> None:
    first = await attach(client, "a.png", png(4, 4), "image/png")
    pending = await create(client, "b.png", png(4, 4), "image/png")
    await send(client, "first [tokens 1]", [first["id"]])
    cases = {
        "already sent": ([first["id"]], 400),
        "not uploaded": ([pending["id"]], 400),
        "twice": ([pending["id"], pending["id"]], 400),
        "unknown": (["atc_unknown"], 404),
        "too many": (["a", "b", "c", "d", "e"], 400),
    }
    for case, (ids, status) in cases.items():
        response = await client.post(request("threads.create", input=user_input("x", ids)))
        assert response.status_code == status, (case, response.text)
        error_message(response, status)


# -- deletion and retention ----------------------------------------------------------------------


async def test_deleting_an_attachment_or_its_thread_deletes_its_bytes(client: Client) -> None:
    kept = await attach(client, "kept.png", png(300, 300), "image/png")
    dropped = await attach(client, "dropped.png", png(300, 300), "image/png")
    assert await chunk_rows(client) == 2
    assert await client.json(request("attachments.delete", attachment_id=dropped["id"])) == {}
    assert await chunk_rows(client) == 1
    error_message(await client.http.get(local(dropped["preview_url"])), 403)

    events = await send(client, "keep [tokens 1]", [kept["id"]])
    thread_id = events[0]["thread"]["id"]
    assert await client.json(request("threads.delete", thread_id=thread_id)) == {}
    assert await chunk_rows(client) == 0
    error_message(await client.http.get(local(kept["preview_url"])), 403)


async def test_the_sweep_removes_uploads_never_sent(client: Client) -> None:
    sent = await attach(client, "sent.png", png(4, 4), "image/png")
    await send(client, "sent [tokens 1]", [sent["id"]])
    unsent = await attach(client, "unsent.png", png(4, 4), "image/png")
    attachments = attachments_of(client)
    assert await attachments.sweep() == 0  # younger than 24 h
    attachments.clock = lambda: time.time() + 25 * 3600
    assert await attachments.sweep() == 1
    missing = await client.post(request("attachments.delete", attachment_id=unsent["id"]))
    error_message(missing, 404)
    assert await chunk_rows(client) == 1  # the sent one's


# -- a client that leaves mid-upload --------------------------------------------------------------


async def raw_upload(client: Client, path: str, body: bytes, boundary: str, **headers: str) -> None:
    """Call the app as Hypercorn would, the client vanishing after half the body."""
    half = len(body) // 2
    messages = [
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.disconnect"},
    ]
    path, _, query = path.partition("?")
    scope = http_scope(
        path,
        query,
        [
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
    )

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    await client.app(scope, receive, send)


def multipart(name: str, data: bytes, mime: str, boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {mime}\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def test_a_client_leaving_mid_upload_leaves_nothing(client: Client) -> None:
    data = b"a" * (1024 * 1024)
    body = multipart("long.txt", data, "text/plain", "b0undary")
    created = await create(client, "long.txt", data, "text/plain")
    await raw_upload(client, local(created["upload_descriptor"]["url"]), body, "b0undary")
    await raw_upload(client, "/chatkit/files", body, "b0undary", **{"X-User-Id": "alice"})
    assert await chunk_rows(client) == 0
    row = await client.store._fetchone("SELECT COUNT(*) FROM chatkit_attachments")
    assert row is not None and row[0] == 1  # the two-phase record, waiting for its bytes
    retry = await post_file(
        client, local(created["upload_descriptor"]["url"]), "long.txt", data, "text/plain"
    )
    assert retry.status_code == 200, retry.text


# -- Chat Completions -----------------------------------------------------------------------


async def test_chat_completions_gets_the_image_and_the_pdfs_text(
    serve: Serve, openai_mock: OpenAIMock
) -> None:
    async with serve(use_chat_completions=True) as client:
        image = await attach(client, "tram.png", png(100, 50), "image/png")
        document = await attach(client, "booking.pdf", pdf(BOOKING), "application/pdf")
        notes = await attach(client, "notes.csv", b"day,city\n1,Porto\n", "text/csv")
        ids = [image["id"], document["id"], notes["id"]]
        await send(client, "cc trip [tokens 2]", ids)
        record = model_request(openai_mock, "cc trip")
    assert record.path == "/v1/chat/completions" and record.status == 200
    assert [m["type"] for m in record.media] == ["image_url"]
    body = json.dumps(record.body)
    assert "TP1351 Lisbon" in body and "booking.pdf" in body and "1,Porto" in body


# -- dictation --------------------------------------------------------------------------------


def transcribe(audio: bytes, mime: str = "audio/webm;codecs=opus") -> bytes:
    return request(
        "input.transcribe", audio_base64=base64.b64encode(audio).decode(), mime_type=mime
    )


async def test_dictation_is_transcribed_by_the_configured_model(
    client: Client, openai_mock: OpenAIMock
) -> None:
    result = await client.json(transcribe(b"Three days in Porto in May"))
    assert result == {"text": "Three days in Porto in May"}
    (record,) = [r for r in openai_mock.requests if r.path == "/v1/audio/transcriptions"]
    assert record.body == {
        "model": "gpt-4o-mini-transcribe",
        "content_type": "audio/webm",
        "bytes": 26,
    }


@pytest.mark.parametrize(
    "body, status, why",
    [
        (transcribe(b"[error 500] boom"), 502, "transcription service failed"),
        (transcribe(b"[error 429] busy"), 503, "unavailable"),
        (transcribe(b"x", "video/mp4"), 415, "not supported"),
        (transcribe(b""), 400, "empty"),
        (request("input.transcribe", audio_base64="%%%", mime_type="audio/webm"), 400, "base64"),
    ],
)
async def test_dictation_failures_are_clear_json(
    client: Client, body: bytes, status: int, why: str
) -> None:
    assert why in error_message(await client.post(body), status)


# -- tripchat migrate --------------------------------------------------------------------------


async def test_migrate_carries_the_bytes_over(client: Client, db_url: str, tmp_path: Path) -> None:
    photo = png(600, 400)
    image = await attach(client, "tram.png", photo, "image/png")
    events = await send(client, "moving [tokens 1]", [image["id"]])
    target_url = f"sqlite:///{tmp_path}/target.db"
    assert await migrate(db_url, target_url, say=lambda line: None)
    async with await open_store(target_url) as target:
        alice = RequestContext("alice")
        assert await blobs.read(target, image["id"], alice) == photo
        assert (await target.load_attachment(image["id"], alice)).thread_id == events[0]["thread"][
            "id"
        ]
