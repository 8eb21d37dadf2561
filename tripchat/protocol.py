"""The ChatKit wire: parsing a request body, the error a client gets for it, SSE frames.

Parsing uses one `TypeAdapter` built once: the SDK's `process` builds a new one for the
whole request union on every call, about a quarter of a turn's server CPU.
"""

from __future__ import annotations

from typing import get_args

from chatkit.types import ChatKitReq
from pydantic import TypeAdapter, ValidationError

_REQUEST: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)
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
