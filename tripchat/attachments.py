"""Attachments: records, uploads streamed into the database, signed URLs, and model input.

`Attachments` is the SDK's `AttachmentStore` (two-phase `attachments.create` and
`attachments.delete`) plus what the HTTP routes and the model need: an `Upload` takes a
file's bytes as they arrive, checks its size and real type, and writes them in chunks
(`store.blobs`); upload and preview URLs carry an expiring signature bound to the
attachment and its owner, because the browser fetches them without our headers; and
`to_model` turns a sent attachment into what the model reads (`media`). Every lookup is
scoped to the user: another user's attachment is missing, exactly like one that is.
It knows no web framework.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar
from urllib.parse import urlencode

from chatkit.store import AttachmentStore, NotFoundError
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
    Page,
    Thread,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    UserMessageItem,
)
from openai.types.responses import ResponseInputContentParam, ResponseInputTextParam
from pydantic import AnyUrl

from . import media
from .context import RequestContext
from .protocol import RequestError
from .signing import Signer
from .store import SQLStore, blobs
from .store.sql import new_id

logger = logging.getLogger("tripchat.attachments")

CHUNK_BYTES = 256 * 1024
"""Bytes per database row: an upload holds at most this much before writing it."""
MAX_PER_MESSAGE = 4
MAX_NAME = 255
UPLOAD_TTL = 3600
PREVIEW_TTL = 24 * 3600
"""A preview URL outlives a long session; fresh ones come with every page of items."""
SWEEP_EVERY_SECONDS = 3600.0
T = TypeVar("T")


def check_name(name: str) -> str:
    """A file name fit to keep and show: printable, bounded."""
    name = "".join(ch for ch in name.strip() if ch.isprintable())[:MAX_NAME]
    return name or "file"


def media_type(declared: str, name: str) -> str:
    """The allowed type of a file from its declared type, else its name's extension."""
    mime = declared.split(";", 1)[0].strip().lower()
    mime = media.ALIASES.get(mime, mime)
    if not mime or mime == "application/octet-stream":
        extension = name.rpartition(".")[2].lower() if "." in name else ""
        mime = media.EXTENSIONS.get(extension) or mimetypes.guess_type(name)[0] or ""
    if mime not in media.ALLOWED:
        raise RequestError(
            415,
            f"file type {mime[:60] or 'unknown'!r} is not supported; attach PNG, JPEG, WebP or "
            "GIF images, PDF, or plain text, Markdown, CSV, JSON or iCalendar files",
        )
    return mime


class Attachments(AttachmentStore[RequestContext]):
    """Attachment records and bytes in the `SQLStore`, signed URLs with `signer`."""

    def __init__(
        self,
        store: SQLStore,
        signer: Signer,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        retention_hours: float = 24.0,
        chat_completions: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.signer = signer
        self.max_bytes = max_bytes
        self.retention_seconds = retention_hours * 3600
        self.chat_completions = chat_completions
        self.clock = clock

    # -- the SDK's AttachmentStore: two-phase upload ---------------------------

    async def create_attachment(
        self, input: AttachmentCreateParams, context: RequestContext
    ) -> Attachment:
        """A record waiting for its bytes, with a signed URL to POST them to."""
        if input.size > self.max_bytes:
            raise RequestError(413, f"file is larger than {self.max_bytes} bytes")
        name = check_name(input.name)
        attachment = await self._new(name, media_type(input.mime_type, name), context, False)
        upload = self.signed_url("upload", attachment.id, context.user_id, context.base_url)
        return attachment.model_copy(
            update={
                "upload_descriptor": AttachmentUploadDescriptor(url=AnyUrl(upload), method="POST")
            }
        )

    async def delete_attachment(self, attachment_id: str, context: RequestContext) -> None:
        """Nothing to do: the bytes go with the record the SDK deletes next (cascade)."""

    # -- uploads ---------------------------------------------------------------

    async def receive(self, attachment_id: str, context: RequestContext) -> Upload:
        """The bytes of a two-phase attachment are coming: one upload, once (else 409)."""
        attachment = await self.store.load_attachment(attachment_id, context)
        if not await blobs.claim(self.store, attachment_id, context):
            raise RequestError(409, f"attachment {attachment_id} was already uploaded")
        return Upload(self, attachment, context, direct=False)

    async def receive_direct(self, name: str, declared: str, context: RequestContext) -> Upload:
        """A file posted straight to the direct-upload endpoint: a new record, filling now."""
        name = check_name(name)
        attachment = await self._new(name, media_type(declared, name), context, True)
        return Upload(self, attachment, context, direct=True)

    async def _new(
        self, name: str, mime: str, context: RequestContext, uploading: bool
    ) -> Attachment:
        attachment_id = new_id("attachment")
        attachment: Attachment
        if mime in media.IMAGES:
            preview = self.signed_url("preview", attachment_id, context.user_id, context.base_url)
            attachment = ImageAttachment(
                id=attachment_id, name=name, mime_type=mime, preview_url=AnyUrl(preview)
            )
        else:
            attachment = FileAttachment(id=attachment_id, name=name, mime_type=mime)
        await self.store.save_attachment(attachment, context)
        await blobs.add_file(self.store, attachment_id, int(self.clock()), uploading=uploading)
        return attachment

    # -- signed URLs -----------------------------------------------------------

    def signed_url(self, purpose: str, attachment_id: str, owner: str, base_url: str) -> str:
        """`{base}chatkit/attachments/{id}/{purpose}?expires=..&signature=..`."""
        ttl = UPLOAD_TTL if purpose == "upload" else PREVIEW_TTL
        expires, signature = self.signer.sign(purpose, attachment_id, owner, ttl=ttl)
        query = urlencode({"expires": expires, "signature": signature})
        return f"{base_url.rstrip('/')}/chatkit/attachments/{attachment_id}/{purpose}?{query}"

    async def signed_owner(
        self, purpose: str, attachment_id: str, expires: str, signature: str
    ) -> str:
        """The owner a signed URL acts for; 403 when it is expired, altered or not ours."""
        owner = await blobs.owner(self.store, attachment_id)
        if owner is None or not self.signer.verify(
            purpose, attachment_id, owner, expires=expires, signature=signature
        ):
            raise RequestError(403, "this link has expired or is not valid")
        return owner

    async def preview(
        self, attachment_id: str, expires: str, signature: str
    ) -> tuple[str, AsyncIterator[bytes]]:
        """The type and bytes a signed preview URL shows (403 bad link, 404 no image)."""
        owner = await self.signed_owner("preview", attachment_id, expires, signature)
        context = RequestContext(owner)
        attachment = await self.store.load_attachment(attachment_id, context)
        if attachment.mime_type not in media.IMAGES:
            raise NotFoundError(f"Attachment {attachment_id} has no preview")
        if await blobs.size(self.store, attachment_id, context) is None:
            raise NotFoundError(f"Attachment {attachment_id} has not been uploaded")
        return attachment.mime_type, blobs.chunks(self.store, attachment_id, context)

    def fresh(self, value: T, context: RequestContext) -> T:
        """`value` (an item, page, thread or event) with its image previews signed anew."""
        match value:
            case ImageAttachment():
                url = self.signed_url("preview", value.id, context.user_id, context.base_url)
                return value.model_copy(update={"preview_url": AnyUrl(url)})
            case UserMessageItem(attachments=attached) if attached:
                update = {"attachments": [self.fresh(a, context) for a in attached]}
                return value.model_copy(update=update)
            case ThreadItemDoneEvent() | ThreadItemAddedEvent():
                # Most items carry no image: no copy of the event on the streaming path.
                item = self.fresh(value.item, context)
                if item is value.item:
                    return value
                return value.model_copy(update={"item": item})  # type: ignore[return-value]
            case Page():
                data = [self.fresh(item, context) for item in value.data]
                return value.model_copy(update={"data": data})
            case Thread():
                return value.model_copy(update={"items": self.fresh(value.items, context)})
        return value

    # -- messages and the model ------------------------------------------------

    async def check_message(self, attachment_ids: list[str], context: RequestContext) -> None:
        """Before a message streams: each attachment the user's, uploaded and not yet sent."""
        if len(attachment_ids) > MAX_PER_MESSAGE:
            raise RequestError(400, f"a message takes at most {MAX_PER_MESSAGE} attachments")
        if len(set(attachment_ids)) != len(attachment_ids):
            raise RequestError(400, "an attachment is named twice in the message")
        for attachment_id in attachment_ids:
            attachment = await self.store.load_attachment(attachment_id, context)
            if await blobs.state(self.store, attachment_id, context) != "complete":
                raise RequestError(400, f"attachment {attachment_id} has not been uploaded")
            if attachment.thread_id is not None:
                raise RequestError(400, f"attachment {attachment_id} was already sent")

    async def to_model(
        self, attachment: Attachment, context: RequestContext
    ) -> ResponseInputContentParam:
        """What the model reads for a sent attachment (a note if it is gone or unreadable)."""
        data = await blobs.read(self.store, attachment.id, context)
        if data is None:
            return ResponseInputTextParam(
                type="input_text",
                text=f"[The user attached {attachment.name!r}; it is no longer available.]",
            )
        return await asyncio.to_thread(
            media.to_model, data, attachment.mime_type, attachment.name, self.chat_completions
        )

    # -- retention -------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete uploads never sent in a message within the retention period."""
        return await blobs.sweep(self.store, int(self.clock() - self.retention_seconds))

    async def sweep_forever(self, every: float = SWEEP_EVERY_SECONDS) -> None:
        """Sweep now and then, between replies (each sweep is one statement)."""
        every = min(every, self.retention_seconds / 4)
        while True:
            try:
                if removed := await self.sweep():
                    logger.info("removed %d attachment(s) never sent in a message", removed)
            except Exception:
                logger.exception("attachment sweep failed; trying again later")
            await asyncio.sleep(every)


class Upload:
    """One file's bytes arriving: size and real type checked, written a chunk at a time.

    `finish` completes the attachment; `abort` leaves nothing behind (a two-phase
    attachment waits for its bytes again, a direct one is gone).
    """

    def __init__(
        self, owner: Attachments, attachment: Attachment, context: RequestContext, *, direct: bool
    ) -> None:
        self.owner = owner
        self.attachment = attachment
        self.context = context
        self.direct = direct
        self.sniffer = media.Sniffer(attachment.mime_type)
        self.size = 0
        self.seq = 0
        self.buffer = bytearray()

    async def feed(self, data: bytes) -> None:
        """Take the next bytes; 413 past the size limit, 400 if they are not the type."""
        self.size += len(data)
        if self.size > self.owner.max_bytes:
            raise RequestError(413, f"file is larger than {self.owner.max_bytes} bytes")
        self.sniffer.feed(data)
        self.buffer += data
        while len(self.buffer) >= CHUNK_BYTES:
            await self._write(bytes(self.buffer[:CHUNK_BYTES]))
            del self.buffer[:CHUNK_BYTES]

    async def finish(self) -> Attachment:
        """The whole file arrived: the attachment is complete and can be sent."""
        self.sniffer.end()
        if self.buffer:
            await self._write(bytes(self.buffer))
            self.buffer.clear()
        store = self.owner.store
        done = self.attachment.model_copy(update={"upload_descriptor": None})
        await store.save_attachment(done, self.context)
        await blobs.complete(store, done.id, self.size)
        return self.owner.fresh(done, self.context)

    async def abort(self) -> None:
        """The upload failed or the client left: drop what was written."""
        self.buffer.clear()
        try:
            if self.direct:
                await self.owner.store.delete_attachment(self.attachment.id, self.context)
            else:
                await blobs.reset(self.owner.store, self.attachment.id)
        except NotFoundError:  # deleted meanwhile: nothing left to drop
            pass

    async def _write(self, chunk: bytes) -> None:
        await blobs.write_chunk(self.owner.store, self.attachment.id, self.seq, chunk)
        self.seq += 1
