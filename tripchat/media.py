"""File types: which ones a traveller may attach, what their bytes really are, and what
the model reads for each. Pure functions over bytes (no store, no web, no event loop).

Images go to the model as `input_image` data URLs, scaled down with Pillow when larger
than the model uses; PDFs as `input_file` on the Responses API, as their extracted text
(pypdf) on Chat Completions, which many providers serve without file support; text
files inline as `input_text`, bounded.
"""

from __future__ import annotations

import base64
import codecs
import io
import logging

from openai.types.responses import (
    ResponseInputContentParam,
    ResponseInputFileParam,
    ResponseInputImageParam,
    ResponseInputTextParam,
)

from .protocol import RequestError

logger = logging.getLogger("tripchat.media")

IMAGES = ("image/png", "image/jpeg", "image/webp", "image/gif")
PDF = "application/pdf"
TEXTS = ("text/plain", "text/markdown", "text/csv", "application/json", "text/calendar")
ALLOWED = (*IMAGES, PDF, *TEXTS)
ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "text/x-markdown": "text/markdown",
    "application/csv": "text/csv",
    "text/json": "application/json",
    "text/x-vcalendar": "text/calendar",
}
EXTENSIONS = {"md": "text/markdown", "markdown": "text/markdown", "ics": "text/calendar"}
"""Names some browsers send with no type (`""`): what the extension says instead."""

MODEL_IMAGE_SIDE = 2048
"""The longest side the model looks at; larger images are scaled down before sending."""
MAX_TEXT_CHARS = 20_000
"""About 5,000 tokens of a text file or a PDF's text reach the model; the rest is cut."""
MAX_PDF_PAGES = 50
SNIFF_BYTES = 16
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", PDF),
)
_JSON_START = b'{["-0123456789tfn'


def sniff(head: bytes) -> str | None:
    """The binary type the first bytes announce, None for anything else (text, say)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for signature, mime in _SIGNATURES:
        if head.startswith(signature):
            return mime
    return None


class Sniffer:
    """Checks a file's bytes, as they stream in, against its declared type.

    Images and PDFs by their signature; text types must be UTF-8 without NUL bytes
    throughout, JSON must start like JSON and iCalendar with BEGIN:VCALENDAR.
    """

    def __init__(self, mime: str) -> None:
        self.mime = mime
        self.head = b""
        self.checked = False
        self.text = codecs.getincrementaldecoder("utf-8")() if mime in TEXTS else None

    def feed(self, data: bytes) -> None:
        if not self.checked:
            self.head += data
            if len(self.head) >= SNIFF_BYTES:
                self._check_head()
        if self.text is not None:
            if b"\x00" in data:
                raise self._mismatch("binary data")
            try:
                self.text.decode(data)
            except UnicodeDecodeError:
                raise self._mismatch("not UTF-8 text") from None

    def end(self) -> None:
        if not self.head:
            raise RequestError(400, "the file is empty")
        if not self.checked:
            self._check_head()
        if self.text is not None:
            try:
                self.text.decode(b"", final=True)
            except UnicodeDecodeError:
                raise self._mismatch("not UTF-8 text") from None

    def _check_head(self) -> None:
        self.checked = True
        found = sniff(self.head)
        if self.text is None:
            if found != self.mime:
                raise self._mismatch(found or "not a known file type")
            return
        if found is not None:
            raise self._mismatch(found)
        start = self.head.removeprefix(codecs.BOM_UTF8).lstrip()
        if self.mime == "application/json" and start[:1] and start[:1] not in _JSON_START:
            raise self._mismatch("not JSON")
        calendar = start[:15].upper()
        is_calendar = bool(calendar) and b"BEGIN:VCALENDAR".startswith(calendar)
        if self.mime == "text/calendar" and not is_calendar:
            raise self._mismatch("not an iCalendar file")
        self.head = self.head[:SNIFF_BYTES]

    def _mismatch(self, found: str) -> RequestError:
        return RequestError(
            400, f"the file's content ({found}) does not match its type {self.mime}"
        )


def to_model(
    data: bytes, mime: str, name: str, chat_completions: bool
) -> ResponseInputContentParam:
    """The content part the model reads for a file (CPU-bound: run it off the event loop)."""
    if mime in IMAGES:
        return _image(data, mime, name)
    if mime == PDF:
        if chat_completions:
            return _text(name, "PDF", _pdf_text(data))
        url = f"data:{PDF};base64,{base64.b64encode(data).decode()}"
        return ResponseInputFileParam(type="input_file", file_data=url, filename=name)
    return _text(name, mime, data.decode("utf-8", errors="replace"))


def _image(data: bytes, mime: str, name: str) -> ResponseInputContentParam:
    """The image as a data URL; scaled to MODEL_IMAGE_SIDE and re-encoded if larger."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > MODEL_IMAGE_SIDE:
                image.thumbnail((MODEL_IMAGE_SIDE, MODEL_IMAGE_SIDE))
                alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
                out = io.BytesIO()
                if alpha:
                    image.convert("RGBA").save(out, "PNG", optimize=True)
                    mime = "image/png"
                else:
                    image.convert("RGB").save(out, "JPEG", quality=85)
                    mime = "image/jpeg"
                data = out.getvalue()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        logger.info("image %r could not be read: %r", name, exc)
        return ResponseInputTextParam(
            type="input_text",
            text=f"[The user attached an image, {name!r}, that could not be read.]",
        )
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return ResponseInputImageParam(type="input_image", image_url=url, detail="auto")


def _pdf_text(data: bytes) -> str:
    """The text of a PDF's first pages; empty for a scan or a file pypdf cannot read."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    parts: list[str] = []
    size = 0
    try:
        reader = PdfReader(io.BytesIO(data))
        for page in reader.pages[:MAX_PDF_PAGES]:
            text = page.extract_text() or ""
            parts.append(text)
            size += len(text)
            if size > MAX_TEXT_CHARS:
                break
    except (PyPdfError, ValueError, KeyError, TypeError, RecursionError) as exc:
        logger.info("PDF text extraction failed: %r", exc)
    return "\n".join(parts)


def _text(name: str, kind: str, text: str) -> ResponseInputTextParam:
    """A file's text inline, cut at MAX_TEXT_CHARS with a note saying so."""
    if not text.strip():
        body = "(no text could be read from it)"
    elif len(text) > MAX_TEXT_CHARS:
        cut = f"[... cut: the first {MAX_TEXT_CHARS} of {len(text)} characters]"
        body = f"{text[:MAX_TEXT_CHARS]}\n{cut}"
    else:
        body = text
    return ResponseInputTextParam(
        type="input_text", text=f"The user attached {name!r} ({kind}):\n<<<\n{body}\n>>>"
    )
