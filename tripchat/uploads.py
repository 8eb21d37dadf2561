"""A `multipart/form-data` upload streamed, part by part, into an `attachments.Upload`.

Starlette's `request.form()` spools each file to a temporary file before the route sees
it; here the `file` field's bytes reach the `Upload` (and the database, a chunk at a
time) as they arrive, through python-multipart's streaming parser. So a 20 MB upload
costs a chunk of memory, the size limit holds while it streams, and a client that
leaves mid-way leaves nothing behind. Refusals are `RequestError`s the route answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from chatkit.types import Attachment
from pydantic import TypeAdapter
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .attachments import Upload
from .protocol import RequestError

FORM_OVERHEAD = 64 * 1024
"""Bytes a form may carry besides the file: the multipart framing and small fields."""
_ATTACHMENT: TypeAdapter[Attachment] = TypeAdapter(Attachment)

Start = Callable[[str, str], Awaitable[Upload]]
"""Called with the file part's name and declared type when its bytes begin."""


class _Parts:
    """python-multipart's callbacks, collected as (kind, value) events to act on async."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def take(self) -> list[tuple[str, object]]:
        events, self.events = self.events, []
        return events

    def _begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        self.events.append(("part", self._headers))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", data[start:end]))

    def _end(self) -> None:
        self.events.append(("end", None))


def _file_part(headers: dict[bytes, bytes]) -> tuple[str, str] | None:
    """(file name, declared type) when this part is the `file` field, else None."""
    _, options = parse_options_header(headers.get(b"content-disposition", b""))
    if options.get(b"name") != b"file":
        return None
    name = options.get(b"filename", b"").decode("utf-8", errors="replace")
    return name, headers.get(b"content-type", b"").decode("latin-1")


async def receive_file(request: Request, start: Start, max_bytes: int) -> Attachment:
    """Stream the form's `file` field into the upload `start` opens; the completed record.

    Raises `RequestError` (400 malformed or no file, 413 too large, 415 not a form) and
    starlette's `ClientDisconnect`; on any failure the upload is aborted first.
    """
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise RequestError(415, "send the file as multipart/form-data in a field named `file`")
    limit = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"file is larger than {max_bytes} bytes")
    parts = _Parts()
    parser = MultipartParser(boundary, parts.callbacks())  # type: ignore[arg-type]
    upload: Upload | None = None
    in_file = False
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise RequestError(413, f"file is larger than {max_bytes} bytes")
            parser.write(chunk)
            for event, value in parts.take():
                if event == "part":
                    found = _file_part(value)  # type: ignore[arg-type]
                    in_file = found is not None
                    if found is not None:
                        if upload is not None:
                            raise RequestError(400, "send one file per upload")
                        upload = await start(*found)
                elif event == "data" and in_file and upload is not None:
                    await upload.feed(value)  # type: ignore[arg-type]
                elif event == "end":
                    in_file = False
        request.state.body_read = True  # a refusal from here on has nothing left to drain
        parser.finalize()
        if upload is None:
            raise RequestError(400, "the form has no field named `file`")
        return await upload.finish()
    except MultipartParseError:
        if upload is not None:
            await _abort(upload)
        raise RequestError(400, "the multipart/form-data body is malformed") from None
    except BaseException:
        if upload is not None:
            await _abort(upload)
        raise


async def _abort(upload: Upload) -> None:
    with anyio.CancelScope(shield=True):
        await upload.abort()


def attachment_json(attachment: Attachment) -> bytes:
    """An attachment as ChatKit serialises it (integration-only metadata left out)."""
    return _ATTACHMENT.dump_json(
        attachment, by_alias=True, exclude_none=True, context={"exclude_metadata": True}
    )
