"""Attachments over real HTTP: a server process, HTTP/1.1 and HTTP/2, SQLite and PostgreSQL.

The web client's requests exactly: `attachments.create` with our headers, the file
POSTed as multipart to the signed upload URL without them, the message naming the
attachments, the preview loaded as an `<img>` would (no headers, another origin). And an
oversize upload refused mid-stream without taking its HTTP/2 neighbours down.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from chatkit_client import assistant_text, create_thread, encode
from conftest import POSTGRES_URL_VAR, empty_postgres, needs_postgres
from openai_mock import OpenAIMock
from servers import ServerProcess, app_env
from test_attachments import BOOKING, pdf, png
from test_http import H2Client, unique, wait_deltas, words

pytestmark = pytest.mark.anyio

ORIGIN = "http://localhost:5173"
USER = {"X-User-Id": "traveller"}
TEST_SECONDS = 30.0
SMALL_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def mock() -> Iterator[OpenAIMock]:
    with OpenAIMock() as running:
        yield running


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
async def server(
    request: pytest.FixtureRequest, mock: OpenAIMock, tmp_path: Path
) -> AsyncIterator[ServerProcess]:
    """`tripchat serve` on this backend, CORS for one origin, a 64 KB upload limit."""
    env = app_env(
        mock.base_url,
        tmp_path / "chat.db",
        CHATKIT_CORS_ORIGINS=ORIGIN,
        CHATKIT_MAX_UPLOAD_BYTES=str(SMALL_LIMIT),
    )
    if request.param == "postgres":
        await empty_postgres(os.environ[POSTGRES_URL_VAR])
        env["CHATKIT_DB_URL"] = os.environ[POSTGRES_URL_VAR]
    with ServerProcess(env, workdir=tmp_path) as running:
        yield running


def client(http2: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        trust_env=False, timeout=httpx.Timeout(10.0), http1=not http2, http2=http2
    )


async def chatkit(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(f"{url}/chatkit", content=encode(body), headers=USER)


async def attach(
    http: httpx.AsyncClient, url: str, name: str, data: bytes, mime: str
) -> dict[str, Any]:
    """attachments.create, then the multipart upload to the signed URL, no user header."""
    params = {"name": name, "size": len(data), "mime_type": mime}
    created = await chatkit(http, url, {"type": "attachments.create", "params": params})
    assert created.status_code == 200, created.text
    descriptor = created.json()["upload_descriptor"]
    assert descriptor["url"].startswith(url)
    uploaded = await http.post(descriptor["url"], files={"file": (name, data, mime)})
    assert uploaded.status_code == 200, uploaded.text
    result: dict[str, Any] = uploaded.json()
    return result


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
async def test_the_web_clients_requests_attach_a_png_and_a_pdf(
    server: ServerProcess, mock: OpenAIMock, http2: bool
) -> None:
    photo, booking = png(64, 48), pdf(BOOKING)
    text = unique("plan around my booking [tokens 3]")
    with anyio.fail_after(TEST_SECONDS):
        async with client(http2) as http:
            image = await attach(http, server.url, "tram.png", photo, "image/png")
            document = await attach(http, server.url, "booking.pdf", booking, "application/pdf")
            body = create_thread(text)
            body["params"]["input"]["attachments"] = [image["id"], document["id"]]
            reply = await chatkit(http, server.url, body)
            assert reply.status_code == 200
            assert reply.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            preview = await http.get(image["preview_url"], headers={"Origin": ORIGIN})
    assert preview.status_code == 200 and preview.content == photo
    assert preview.headers["content-type"] == "image/png"
    assert preview.headers["x-content-type-options"] == "nosniff"
    assert preview.headers["access-control-allow-origin"] == ORIGIN
    record = next(r for r in mock.requests if text in json.dumps(r.body))
    kinds = [(m["type"], m["mime"]) for m in record.media]
    assert kinds == [("input_image", "image/png"), ("input_file", "application/pdf")]
    assert record.media[1]["sha256"] == hashlib.sha256(booking).hexdigest()
    assert text in reply.text


def form(name: str, data: bytes, mime: str, boundary: str = "tripchatb0undary") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {mime}\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def test_h2_oversize_upload_is_413_and_spares_the_neighbour_stream(
    server: ServerProcess,
) -> None:
    big = form("big.txt", b"x" * (4 * SMALL_LIMIT), "text/plain")
    with anyio.fail_after(TEST_SECONDS):
        async with H2Client.connect(server.port) as h2c:
            running = await h2c.request(
                encode(create_thread(unique("[tokens 40] [delay 0.05]"))), USER
            )
            await wait_deltas(running, 1)
            refused = await h2c.request(
                big,
                USER,
                content_length=False,
                chunks=16,
                pause=0.01,
                path="/chatkit/files",
                content_type="multipart/form-data; boundary=tripchatb0undary",
            )
            await h2c.finish(refused)
            assert refused.status == 413, refused
            assert "larger than" in refused.json()["error"]["message"]
            await h2c.finish(running)
    assert running.status == 200
    assert assistant_text(running.events) == words(40)


async def test_http1_oversize_upload_is_413(server: ServerProcess) -> None:
    big = form("big.txt", b"x" * (4 * SMALL_LIMIT), "text/plain")

    async def chunked() -> AsyncIterator[bytes]:
        for offset in range(0, len(big), 16 * 1024):
            yield big[offset : offset + 16 * 1024]

    headers = {**USER, "content-type": "multipart/form-data; boundary=tripchatb0undary"}
    with anyio.fail_after(TEST_SECONDS):
        async with client(False) as http:
            response = await http.post(
                f"{server.url}/chatkit/files", content=chunked(), headers=headers
            )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["status"] == 413
