"""The ChatKit wire: parsing a request body, the checks of its values and the error a
client gets for them, SSE frames.

Parsing uses one `TypeAdapter` built once: the SDK's `process` builds a new one for the
whole request union on every call, about a quarter of a turn's server CPU.
"""

from __future__ import annotations

from typing import get_args

from chatkit.types import (
    ChatKitReq,
    StreamingReq,
    UserMessageInput,
    UserMessageItem,
    UserMessageTagContent,
    UserMessageTextContent,
)
from pydantic import TypeAdapter, ValidationError

_REQUEST: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)
MAX_PAGE = 100
MAX_MESSAGE_CHARS = 32_000
"""About 8,000 tokens: a pasted itinerary fits; a message that fills the model's context
(and every later page and turn of the thread) does not."""
MAX_TITLE = 200
REQUEST_TYPES = tuple(
    member.model_fields["type"].default for member in get_args(get_args(ChatKitReq)[0])
)


class RequestError(Exception):
    """A client mistake found before any response was sent: answer `status` with `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_request(body: bytes | str) -> ChatKitReq:
    """Parse a ChatKit request body, turning pydantic's errors into one readable line."""
    try:
        return _REQUEST.validate_json(body)
    except ValidationError as exc:
        raise RequestError(400, describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """The first few problems as `where: what`, never echoing the (possibly huge) input."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        if error["type"] == "json_invalid":
            return "request body is not valid JSON"
        if error["type"] == "union_tag_invalid":
            tag = str(error.get("ctx", {}).get("tag", ""))[:60]
            return f"unknown request type {tag!r}; expected one of {', '.join(REQUEST_TYPES)}"
        if error["type"] == "union_tag_not_found":
            return f"request has no 'type'; expected one of {', '.join(REQUEST_TYPES)}"
        where = ".".join(str(part) for part in error["loc"][1:]) or "body"
        problems.append(f"{where}: {error['msg']}"[:200])
    return "invalid request: " + "; ".join(problems)


def frame(payload: bytes) -> bytes:
    """One server-sent event carrying a JSON payload."""
    return b"data: " + payload + b"\n\n"


def text_of(item: UserMessageItem) -> str:
    """The plain text of a user message (its tags left out)."""
    return " ".join(part.text for part in item.content if isinstance(part, UserMessageTextContent))


def check_input(user_input: UserMessageInput) -> None:
    """A message must say something, within a size the model and every later page can carry."""
    if not user_input.attachments and not any(
        isinstance(part, UserMessageTagContent) or part.text.strip() for part in user_input.content
    ):
        raise RequestError(400, "the message is empty")
    if sum(len(part.text) for part in user_input.content) > MAX_MESSAGE_CHARS:
        raise RequestError(400, f"the message is longer than {MAX_MESSAGE_CHARS} characters")


def check_limit(limit: int | None) -> int | None:
    """A page size from the client, capped: one request cannot ask for a whole thread."""
    if limit is None:
        return None
    if limit < 1:
        raise RequestError(400, f"limit must be at least 1, got {limit}")
    return min(limit, MAX_PAGE)


def thread_id_of(request: StreamingReq) -> str | None:
    """The existing thread a streaming request continues; None for threads.create."""
    params = getattr(request, "params", None)
    thread_id = getattr(params, "thread_id", None)
    return thread_id if isinstance(thread_id, str) else None


def short_title(text: str, limit: int = 48) -> str:
    """A thread title from the user's first message, cut at a word boundary."""
    words = " ".join(text.split())
    if len(words) <= limit:
        return words or "New trip"
    return words[:limit].rsplit(" ", 1)[0].rstrip(",.;:-") + "…"
