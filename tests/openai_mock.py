"""A scripted stand-in for the OpenAI HTTP API, served on 127.0.0.1.

Tests and benchmarks point the real ``openai`` client (and through it the Agents
SDK) at this server, so every byte crosses a real HTTP connection and the SDK's
own parsing, retries and timeouts run exactly as they would against OpenAI.

The model is steered by bracketed directives in the last user message:

* ``[call NAME {json}]`` - reply with a function call (repeatable: one response
  carries all calls); once tool outputs follow the message, reply with
  ``"Tool results: <outputs>\\n"`` and then the usual words.
* ``[error 429]`` / ``[error-once 500]`` - fail with that status and an OpenAI
  error body (always / only for the first request carrying this exact message).
* ``[stall S]`` - go silent for S seconds after the stream has started (a
  non-streamed reply waits before its headers); with ``[tokens N]`` in the same
  message, the stall comes after those N text deltas instead (mid-reply, before the
  text is done). ``[stall-before S]`` - wait S seconds before sending the headers.
  All end early if the client leaves.
* ``[tokens N]`` / ``[delay S]`` - N text deltas ``"w0 "``, ``"w1 "``, ... with
  S seconds between them.
* ``[cut-after N]`` - drop the connection after N text deltas (after all of them if
  the reply has fewer), mid-body: the client's read fails as on a lost connection.
* ``[fail-after N]`` - after N text deltas, end the stream with the API's mid-stream
  failure: a ``response.failed`` event (Responses) or an ``{"error": ...}`` chunk
  (Chat Completions), as OpenAI sends when the model fails mid-reply.
  Both come when the next delta would have (after ``[delay S]``); a reply of function
  calls alone is never stalled mid-text, cut or failed.

Attachments: ``input_image`` / ``input_file`` parts (Responses) and ``image_url`` /
``file`` parts (Chat Completions) are accepted and summarised in
``RecordedRequest.media`` (type, media type, decoded size and SHA-256, file name, and an
image's dimensions).

Dictation: ``POST /v1/audio/transcriptions`` (multipart, as the ``openai`` client sends
it) answers ``{"text": ...}`` with the audio bytes read as UTF-8 text, so a test
"says" what it wants transcribed; ``[error N]`` in that text fails with status N.

Run ``python tests/openai_mock.py --port 0`` to serve it as a process; it prints
``OPENAI_BASE_URL=...`` once listening and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import math
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import anyio
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from PIL import Image

HOST = "127.0.0.1"
MAX_SECONDS = 300.0
"""Upper bound for any requested wait, so a typo cannot hang a test run."""
MAX_TOKENS = 100_000
TOOL_OUTPUT_CHARS = 300
ARGUMENT_CHUNK = 16
"""Arguments stream in pieces this long, so clients must really concatenate them."""
STARTUP_TIMEOUT = 10.0
GRACEFUL_TIMEOUT = 1.0
"""Replies still running at shutdown get this long to finish before the mock cuts them."""


@dataclass
class RecordedRequest:
    """What the mock saw and did for one request, for tests to assert on.

    The server thread fills it in while replying; wait for ``done`` before
    asserting on a reply the client did not read to the end.
    """

    path: str
    body: Any
    """The parsed JSON body, or ``None`` if there was none or it was not JSON."""
    stream: bool = False
    status: int = 0
    """The HTTP status sent; 0 until the headers are out."""
    deltas_sent: int = 0
    """Text deltas written (for a non-streamed reply: the pieces of its text)."""
    last_delta_at: float = 0.0
    """`time.monotonic()` when the last text delta was written."""
    disconnected: bool = False
    """The client went away before the reply was complete."""
    done: bool = False
    media: list[dict[str, Any]] = field(default_factory=list)
    """Images and files the request carried (see ``media_parts``)."""


@dataclass(frozen=True)
class Directives:
    """The directives parsed from a user message; ``None`` means "use the default"."""

    calls: tuple[tuple[str, str], ...] = ()
    error: int | None = None
    error_once: int | None = None
    stall: float = 0.0
    stall_before: float = 0.0
    tokens: int | None = None
    delay: float | None = None
    cut_after: int | None = None
    fail_after: int | None = None


_DIRECTIVE = re.compile(
    r"\[(call|error-once|error|stall-before|stall|tokens|delay|cut-after|fail-after)\s+"
)
_NAME = re.compile(r"([A-Za-z0-9_.-]{1,64})\s*")
_CLOSE = re.compile(r"\s*\]")
_VALUE = re.compile(r"([^\s\]]+)\s*\]")
_DIGITS = re.compile(r"[0-9]{1,9}")
_INT_RANGES = {
    "error": (400, 599),
    "error-once": (400, 599),
    "tokens": (0, MAX_TOKENS),
    "cut-after": (0, MAX_TOKENS),
    "fail-after": (0, MAX_TOKENS),
}
_JSON = json.JSONDecoder()


def _seconds(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return min(value, MAX_SECONDS) if math.isfinite(value) and value >= 0 else None


def _bounded_int(raw: str, low: int, high: int) -> int | None:
    if _DIGITS.fullmatch(raw) is None:
        return None
    return int(raw) if low <= int(raw) <= high else None


def _call_at(text: str, pos: int) -> tuple[str, str] | None:
    """Parse ``NAME {json}]`` at pos; ``None`` when it is malformed."""
    name = _NAME.match(text, pos)
    if name is None:
        return None
    pos = name.end()
    arguments: object = {}
    if text.startswith("{", pos):
        try:
            arguments, pos = _JSON.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict) or _CLOSE.match(text, pos) is None:
        return None
    return name.group(1), json.dumps(arguments)


def parse_directives(text: str) -> Directives:
    """Read the directives in text; malformed ones are ignored, later ones win."""
    calls: list[tuple[str, str]] = []
    whole: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for match in _DIRECTIVE.finditer(text):
        kind = match.group(1)
        if kind == "call":
            if (call := _call_at(text, match.end())) is not None:
                calls.append(call)
        elif (value := _VALUE.match(text, match.end())) is None:
            continue
        elif kind in _INT_RANGES:
            if (number := _bounded_int(value.group(1), *_INT_RANGES[kind])) is not None:
                whole[kind] = number
        elif (wait := _seconds(value.group(1))) is not None:
            seconds[kind] = wait
    return Directives(
        calls=tuple(calls),
        error=whole.get("error"),
        error_once=whole.get("error-once"),
        stall=seconds.get("stall", 0.0),
        stall_before=seconds.get("stall-before", 0.0),
        tokens=whole.get("tokens"),
        delay=seconds.get("delay"),
        cut_after=whole.get("cut-after"),
        fail_after=whole.get("fail-after"),
    )


def _text(value: object) -> str:
    """Flatten message content or tool output (string or list of parts) to text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part["text"]
            for part in value
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return json.dumps(value)


@dataclass(frozen=True)
class Turn:
    """The part of a conversation the script reacts to."""

    user_text: str | None = None
    tool_outputs: tuple[str, ...] = ()
    ends_with_user: bool = False


def _turn(
    items: Iterable[object],
    is_user: Callable[[dict[str, Any]], bool],
    tool_output: Callable[[dict[str, Any]], str | None],
) -> Turn:
    user_text: str | None = None
    outputs: list[str] = []
    ends_with_user = False
    for item in items:
        ends_with_user = False
        if not isinstance(item, dict):
            continue
        if is_user(item):
            user_text, outputs, ends_with_user = _text(item.get("content")), [], True
        elif (output := tool_output(item)) is not None:
            outputs.append(output)
    return Turn(user_text, tuple(outputs), ends_with_user)


def responses_turn(body: dict[str, Any]) -> Turn:
    """Find the last user message and the tool outputs after it in a Responses request."""
    items = body.get("input")
    if isinstance(items, str):
        return Turn(items, (), True)
    return _turn(
        items if isinstance(items, list) else (),
        lambda item: item.get("role") == "user" and item.get("type", "message") == "message",
        lambda item: (
            _text(item.get("output")) if item.get("type") == "function_call_output" else None
        ),
    )


def chat_turn(body: dict[str, Any]) -> Turn:
    """Find the last user message and the tool outputs after it in a Chat request."""
    messages = body.get("messages")
    return _turn(
        messages if isinstance(messages, list) else (),
        lambda item: item.get("role") == "user",
        lambda item: _text(item.get("content")) if item.get("role") == "tool" else None,
    )


def _data_url(url: object) -> tuple[str, bytes] | None:
    """(media type, bytes) of a base64 data URL; None for anything else."""
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        return None
    head, data = url[5:].split(";base64,", 1)
    try:
        return head, base64.b64decode(data, validate=True)
    except ValueError:
        return None


def _media_part(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "input_image":
        url, name = part.get("image_url"), None
    elif kind == "image_url":
        url, name = (part.get("image_url") or {}).get("url"), None
    elif kind == "input_file":
        url, name = part.get("file_data"), part.get("filename")
    elif kind == "file":
        url, name = (
            (part.get("file") or {}).get("file_data"),
            (part.get("file") or {}).get("filename"),
        )
    else:
        return None
    decoded = _data_url(url)
    if decoded is None:
        return {"type": kind, "mime": None, "bytes": None, "filename": name, "sha256": None}
    mime, data = decoded
    summary = {
        "type": kind,
        "mime": mime,
        "bytes": len(data),
        "filename": name,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if mime.startswith("image/"):
        try:
            with Image.open(io.BytesIO(data)) as image:
                summary["dimensions"] = list(image.size)
        except OSError:
            summary["dimensions"] = None
    return summary


def media_parts(body: object) -> list[dict[str, Any]]:
    """The image and file parts of every message in a Responses or Chat request."""
    if not isinstance(body, dict):
        return []
    items = body.get("input") if "input" in body else body.get("messages")
    found: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else ():
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and (summary := _media_part(part)) is not None:
                found.append(summary)
    return found


def multipart_fields(content_type: str, raw: bytes) -> dict[str, tuple[dict[str, str], bytes]]:
    """A small multipart/form-data reader: field name -> (part headers, value)."""
    boundary = content_type.partition("boundary=")[2].strip('"').encode()
    fields: dict[str, tuple[dict[str, str], bytes]] = {}
    if not boundary:
        return fields
    for chunk in raw.split(b"--" + boundary)[1:]:
        head, _, value = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, sep, rest = line.partition(":")
            if sep:
                headers[key.strip().lower()] = rest.strip()
        name = re.search(r'name="([^"]*)"', headers.get("content-disposition", ""))
        if name:
            fields[name.group(1)] = (headers, value.removesuffix(b"\r\n"))
    return fields


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


@dataclass(frozen=True)
class ToolCall:
    """One scripted function call, with ids unique to this reply."""

    name: str
    arguments: str
    call_id: str = field(default_factory=lambda: _new_id("call_"))
    item_id: str = field(default_factory=lambda: _new_id("fc_"))

    def argument_chunks(self) -> list[str]:
        """The arguments cut into pieces, as a model streams them."""
        return [
            self.arguments[i : i + ARGUMENT_CHUNK]
            for i in range(0, len(self.arguments), ARGUMENT_CHUNK)
        ]


@dataclass(frozen=True)
class Plan:
    """Everything the reply to one request will contain, decided before it starts."""

    calls: tuple[ToolCall, ...]
    deltas: tuple[str, ...]
    delay: float
    stall: float
    input_tokens: int
    stall_after: int | None = None
    """Text deltas sent before the stall; None: it comes before any text."""
    cut_after: int | None = None
    fail_after: int | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    @property
    def output_tokens(self) -> int:
        return len(self.deltas) + sum(len(c.arguments) // 4 + 1 for c in self.calls)


def make_plan(
    turn: Turn, directives: Directives, tokens: int, delay: float, input_tokens: int
) -> Plan:
    """Decide between function calls and text, following the directives."""
    count = tokens if directives.tokens is None else directives.tokens
    words = tuple(f"w{i} " for i in range(count))
    calls: tuple[ToolCall, ...] = ()
    deltas = words
    if turn.tool_outputs:
        shown = "; ".join(output[:TOOL_OUTPUT_CHARS] for output in turn.tool_outputs)
        deltas = (f"Tool results: {shown}\n", *words)
    elif turn.ends_with_user and directives.calls:
        calls = tuple(ToolCall(name, arguments) for name, arguments in directives.calls)
        deltas = ()

    def after(count: int | None) -> int | None:
        # Only text is ever interrupted: a reply of function calls alone runs whole.
        return None if count is None or not deltas else min(count, len(deltas))

    return Plan(
        calls=calls,
        deltas=deltas,
        delay=delay if directives.delay is None else directives.delay,
        stall=directives.stall,
        input_tokens=input_tokens,
        stall_after=after(len(deltas) if directives.tokens is not None else None),
        cut_after=after(directives.cut_after),
        fail_after=after(directives.fail_after),
    )


def _error_body(status: int, message: str) -> dict[str, Any]:
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", None
    elif status == 401:
        kind, code = "invalid_request_error", "invalid_api_key"
    else:
        kind, code = "invalid_request_error", None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


MID_STREAM_FAILURE = "Scripted mid-stream failure from the OpenAI mock."


class Halted(Exception):
    """The reply stopped where the plan said: cut (the body left unfinished) or failed."""


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data)}\n\n".encode()


class _Writer:
    """Sends the response while keeping the request record accurate."""

    def __init__(self, send: ASGISendCallable, record: RecordedRequest) -> None:
        self._send = send
        self.record = record
        self.finished = False

    async def start(
        self, status: int, content_type: str, extra: Iterable[tuple[str, str]] = ()
    ) -> None:
        headers = [("content-type", content_type), ("x-request-id", _new_id("req_")), *extra]
        if content_type.startswith("text/event-stream"):
            headers.append(("cache-control", "no-cache"))
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers],
            }
        )
        self.record.status = status

    async def body(self, data: bytes, *, more: bool = True) -> None:
        # Set before sending: a client that hangs up once it has everything
        # (the Agents SDK closes at response.completed) did not cut the reply short.
        self.finished = not more
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: object, extra: Iterable[tuple[str, str]] = ()
    ) -> None:
        await self.start(status, "application/json", extra)
        await self.body(json.dumps(payload).encode(), more=False)

    async def error(self, status: int, message: str) -> None:
        # retry-after: 0 alone makes the openai SDK fall back to 0.5 s+ backoff;
        # retry-after-ms, which it prefers, lets a scripted retry happen at once.
        extra = [("retry-after", "0"), ("retry-after-ms", "1")] if status == 429 else []
        await self.json(status, _error_body(status, message), extra)

    async def texts(
        self, plan: Plan, encode: Callable[[str], bytes], failure: Callable[[], bytes]
    ) -> None:
        """Stream the text deltas, paced by the plan's delay, counting each one sent; stall,
        cut or fail (sending `failure()`) after as many deltas as the plan says."""
        await self._mid_text(plan, 0, failure)
        for index, delta in enumerate(plan.deltas):
            if index and plan.delay:
                await anyio.sleep(plan.delay)
            await self.body(encode(delta))
            self.record.deltas_sent += 1
            self.record.last_delta_at = time.monotonic()
            await self._mid_text(plan, index + 1, failure)

    async def _mid_text(self, plan: Plan, sent: int, failure: Callable[[], bytes]) -> None:
        if sent == plan.stall_after:
            await anyio.sleep(plan.stall)
        if sent in (plan.fail_after, plan.cut_after) and sent and plan.delay:
            await anyio.sleep(plan.delay)  # it comes when the next delta would have
        if sent == plan.fail_after:
            await self.body(failure(), more=False)
            raise Halted
        if sent == plan.cut_after:
            raise Halted  # the app returns mid-body: the server drops the connection


class _ResponsesEvents:
    """Numbers Responses API events and sends them as ``event:``/``data:`` pairs."""

    def __init__(self, writer: _Writer) -> None:
        self._writer = writer
        self._sequence = 0

    def encode(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return _sse(payload, kind)

    async def emit(self, kind: str, *, last: bool = False, **fields: Any) -> None:
        await self._writer.body(self.encode(kind, **fields), more=not last)


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [_output_text(text)] if status == "completed" else []
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _function_item(call: ToolCall, status: str) -> dict[str, Any]:
    arguments = call.arguments if status == "completed" else ""
    return {
        "id": call.item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call.call_id,
        "name": call.name,
    }


class _Response:
    """The Responses API object for one reply, in its in-progress and final forms."""

    def __init__(self, body: dict[str, Any], plan: Plan) -> None:
        self.body = body
        self.plan = plan
        self.id = _new_id("resp_")
        self.message_id = _new_id("msg_")
        self.created_at = int(time.time())

    def whole(self) -> dict[str, Any]:
        """The non-streamed Response object."""
        return self.snapshot(True)

    def output(self) -> list[dict[str, Any]]:
        if self.plan.calls:
            return [_function_item(call, "completed") for call in self.plan.calls]
        return [_message_item(self.message_id, self.plan.text, "completed")]

    def usage(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "input_tokens": plan.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": plan.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": plan.input_tokens + plan.output_tokens,
        }

    def snapshot(self, completed: bool) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "completed" if completed else "in_progress",
            "completed_at": int(time.time()) if completed else None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body.get("model") or "gpt-4.1",
            "output": self.output() if completed else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self.usage() if completed else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    async def stream(self, writer: _Writer) -> None:
        """Send the exact event sequence the Responses API streams."""
        events = _ResponsesEvents(writer)
        await writer.start(200, "text/event-stream; charset=utf-8")
        await events.emit("response.created", response=self.snapshot(False))
        if self.plan.stall and self.plan.stall_after is None:
            await anyio.sleep(self.plan.stall)
        await events.emit("response.in_progress", response=self.snapshot(False))
        if self.plan.calls:
            for index, call in enumerate(self.plan.calls):
                await self._stream_call(events, index, call)
        else:
            await self._stream_message(events, writer)
        await events.emit("response.completed", last=True, response=self.snapshot(True))

    async def _stream_message(self, events: _ResponsesEvents, writer: _Writer) -> None:
        place = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        text = self.plan.text
        await events.emit(
            "response.output_item.added",
            output_index=0,
            item=_message_item(self.message_id, "", "in_progress"),
        )
        await events.emit("response.content_part.added", **place, part=_output_text(""))
        failed = {
            **self.snapshot(False),
            "status": "failed",
            "error": {"code": "server_error", "message": MID_STREAM_FAILURE},
        }
        await writer.texts(
            self.plan,
            lambda delta: events.encode(
                "response.output_text.delta", **place, delta=delta, logprobs=[]
            ),
            lambda: events.encode("response.failed", response=failed),
        )
        await events.emit("response.output_text.done", **place, text=text, logprobs=[])
        await events.emit("response.content_part.done", **place, part=_output_text(text))
        await events.emit(
            "response.output_item.done",
            output_index=0,
            item=_message_item(self.message_id, text, "completed"),
        )

    @staticmethod
    async def _stream_call(events: _ResponsesEvents, index: int, call: ToolCall) -> None:
        place = {"item_id": call.item_id, "output_index": index}
        await events.emit(
            "response.output_item.added",
            output_index=index,
            item=_function_item(call, "in_progress"),
        )
        for chunk in call.argument_chunks():
            await events.emit("response.function_call_arguments.delta", **place, delta=chunk)
        await events.emit(
            "response.function_call_arguments.done", **place, arguments=call.arguments
        )
        await events.emit(
            "response.output_item.done", output_index=index, item=_function_item(call, "completed")
        )


class _ChatCompletion:
    """The Chat Completions reply for one request, whole or as chunks."""

    def __init__(self, body: dict[str, Any], plan: Plan) -> None:
        self.plan = plan
        self.id = _new_id("chatcmpl-")
        self.created = int(time.time())
        self.model = body.get("model") or "gpt-4.1"
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.plan.calls else "stop"

    def usage(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "prompt_tokens": plan.input_tokens,
            "completion_tokens": plan.output_tokens,
            "total_tokens": plan.input_tokens + plan.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_openai_mock",
            "service_tier": "default",
        }

    def whole(self) -> dict[str, Any]:
        """The non-streamed ``chat.completion`` object."""
        calls = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in self.plan.calls
        ]
        message = {
            "role": "assistant",
            "content": None if calls else self.plan.text,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = calls
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage()}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        payload = {**self._envelope("chat.completion.chunk"), "choices": [choice]}
        if self.include_usage:
            payload["usage"] = None
        return _sse(payload)

    async def stream(self, writer: _Writer) -> None:
        """Send chunks as the Chat Completions API does, ending with ``[DONE]``."""
        plan = self.plan
        await writer.start(200, "text/event-stream; charset=utf-8")
        first = {"role": "assistant", "content": None if plan.calls else "", "refusal": None}
        await writer.body(self.chunk(first))
        if plan.stall and plan.stall_after is None:
            await anyio.sleep(plan.stall)
        for index, call in enumerate(plan.calls):
            head = {
                "index": index,
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await writer.body(self.chunk({"tool_calls": [head]}))
            for piece in call.argument_chunks():
                part = {"index": index, "function": {"arguments": piece}}
                await writer.body(self.chunk({"tool_calls": [part]}))
        await writer.texts(
            plan,
            lambda delta: self.chunk({"content": delta}),
            lambda: _sse(_error_body(500, MID_STREAM_FAILURE)),
        )
        await writer.body(self.chunk({}, self.finish_reason))
        if self.include_usage:
            usage_chunk = {
                **self._envelope("chat.completion.chunk"),
                "choices": [],
                "usage": self.usage(),
            }
            await writer.body(_sse(usage_chunk))
        await writer.body(b"data: [DONE]\n\n", more=False)


_ROUTES: dict[tuple[str, str], Callable[[dict[str, Any]], Turn]] = {
    ("POST", "/v1/responses"): responses_turn,
    ("POST", "/v1/chat/completions"): chat_turn,
}


async def _read_body(receive: ASGIReceiveCallable) -> bytes | None:
    """The whole request body, or ``None`` if the client left while sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message["body"])
        if not message["more_body"]:
            return b"".join(chunks)


async def _until_disconnect(
    receive: ASGIReceiveCallable, writer: _Writer, scope: anyio.CancelScope
) -> None:
    """Stop the reply the moment the client goes away, and say so in the record."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not writer.finished:
        writer.record.disconnected = True
    scope.cancel()


class OpenAIMock:
    """The mock server: an ASGI app plus the means to run it in a thread or a process."""

    def __init__(self, tokens: int = 20, delay: float = 0.0, *, port: int = 0) -> None:
        self.tokens = tokens
        self.delay = delay
        self.requests: list[RecordedRequest] = []
        self._port = port
        self._lock = threading.Lock()
        self._failed_once: set[str] = set()
        self._socket: socket.socket | None = None
        self._on_ready: Callable[[], None] = lambda: None
        self._closing = anyio.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread_error: BaseException | None = None

    @property
    def base_url(self) -> str:
        """The URL to give the OpenAI client, valid once the mock is listening."""
        if self._port == 0:
            raise RuntimeError("OpenAIMock is not listening yet; call start() first")
        return f"http://{HOST}:{self._port}/v1"

    def reset(self) -> None:
        """Forget recorded requests and which ``[error-once]`` messages already failed."""
        with self._lock:
            self.requests.clear()
            self._failed_once.clear()

    def listen(self) -> None:
        """Bind the port now, so base_url is known and connects queue until serving."""
        if self._socket is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((HOST, self._port))
        sock.listen(2048)
        self._port = sock.getsockname()[1]
        self._socket = sock

    async def serve(
        self,
        shutdown_trigger: Callable[[], Awaitable[object]],
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        """Serve on the current event loop until shutdown_trigger returns."""
        self.listen()
        assert self._socket is not None
        config = Config()
        # hypercorn takes over the descriptor, and closes it at shutdown.
        config.bind = [f"fd://{self._socket.detach()}"]
        self._socket = None
        config.backlog = 2048
        # Longer than any client's pool expiry, so the client always closes first
        # and never reuses a connection the server is dropping.
        config.keep_alive_timeout = 300.0
        config.keep_alive_max_requests = 1_000_000
        # Only a backstop: the mock cuts its own replies first, since hypercorn
        # cancelling connection tasks spews tracebacks.
        config.graceful_timeout = GRACEFUL_TIMEOUT + 2.0
        config.loglevel = "WARNING"
        config.accesslog = None
        self._on_ready = on_ready
        self._closing = anyio.Event()

        async def shutdown() -> None:
            await shutdown_trigger()
            self._closing.set()

        await hypercorn_serve(self, config, shutdown_trigger=shutdown, mode="asgi")

    def start(self) -> None:
        """Serve from a background thread with its own event loop; returns when ready."""
        if self._thread is not None:
            raise RuntimeError("OpenAIMock is already running")
        self.listen()
        ready = threading.Event()
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._run_thread, args=(ready,), name="openai-mock", daemon=True
        )
        self._thread.start()
        if not ready.wait(STARTUP_TIMEOUT) or self._thread_error is not None:
            raise RuntimeError("OpenAIMock failed to start") from self._thread_error

    def _run_thread(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            await self.serve(self._stopping.wait, ready.set)

        try:
            asyncio.run(main())
        except BaseException as error:  # surfaced by start() or stop()
            self._thread_error = error
            ready.set()

    def stop(self) -> None:
        """Shut down gracefully: running replies get GRACEFUL_TIMEOUT, then are cut."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(GRACEFUL_TIMEOUT + STARTUP_TIMEOUT)
        self._thread = self._loop = self._stopping = None
        if thread.is_alive():
            raise RuntimeError("OpenAIMock did not stop in time")
        if self._thread_error is not None:
            raise RuntimeError("OpenAIMock crashed while serving") from self._thread_error

    def __enter__(self) -> OpenAIMock:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw = await _read_body(receive)
        if raw is None:
            return
        method, path = scope["method"], scope["path"]
        if path.startswith("/_mock/"):
            await self._control(method, path, _Writer(send, RecordedRequest(path, None)))
            return
        if (method, path) == ("POST", "/v1/audio/transcriptions"):
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            await self._transcribe(headers.get("content-type", ""), raw, send)
            return
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            path=path,
            body=body,
            stream=isinstance(body, dict) and body.get("stream") is True,
            media=media_parts(body),
        )
        with self._lock:
            self.requests.append(record)
        writer = _Writer(send, record)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_until_disconnect, receive, writer, group.cancel_scope)
                group.start_soon(self._cut_at_shutdown, group.cancel_scope)
                await self._reply(method, path, body, writer)
                group.cancel_scope.cancel()
        finally:
            record.done = True

    async def _transcribe(self, content_type: str, raw: bytes, send: ASGISendCallable) -> None:
        """The audio bytes, read as text, are the transcript; ``[error N]`` fails."""
        fields = multipart_fields(content_type, raw)
        headers, audio = fields.get("file", ({}, b""))
        model = fields.get("model", ({}, b""))[1].decode()
        record = RecordedRequest(
            path="/v1/audio/transcriptions",
            body={"model": model, "content_type": headers.get("content-type"), "bytes": len(audio)},
        )
        with self._lock:
            self.requests.append(record)
        writer = _Writer(send, record)
        text = audio.decode("utf-8", errors="replace")
        status = parse_directives(text).error
        try:
            if not model or "file" not in fields:
                await writer.error(400, "model and file are required")
            elif status is not None:
                await writer.error(status, f"Scripted error {status} from the OpenAI mock.")
            else:
                await writer.json(200, {"text": text})
        finally:
            record.done = True

    async def _cut_at_shutdown(self, scope: anyio.CancelScope) -> None:
        await self._closing.wait()
        await anyio.sleep(GRACEFUL_TIMEOUT)
        scope.cancel()

    async def _lifespan(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                self._on_ready()
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _control(self, method: str, path: str, writer: _Writer) -> None:
        """Let a test in another process read and clear what this process recorded."""
        if (method, path) == ("GET", "/_mock/requests"):
            with self._lock:
                recorded = [asdict(r) for r in self.requests]
            await writer.json(200, recorded)
        elif (method, path) == ("POST", "/_mock/reset"):
            self.reset()
            await writer.json(200, {"ok": True})
        else:
            await writer.error(404, f"Invalid URL ({method} {path})")

    async def _reply(self, method: str, path: str, body: Any, writer: _Writer) -> None:
        turn_of = _ROUTES.get((method, path))
        if turn_of is None:
            await writer.error(404, f"Invalid URL ({method} {path})")
            return
        if not isinstance(body, dict):
            await writer.error(400, "We could not parse the JSON body of your request.")
            return
        turn = turn_of(body)
        directives = parse_directives(turn.user_text or "")
        streaming = body.get("stream") is True
        await anyio.sleep(directives.stall_before + (0.0 if streaming else directives.stall))
        status = self._scripted_error(turn.user_text or "", directives)
        if status is not None:
            await writer.error(status, f"Scripted error {status} from the OpenAI mock.")
            return
        plan = make_plan(turn, directives, self.tokens, self.delay, len(json.dumps(body)) // 4)
        reply: _Response | _ChatCompletion = (
            _Response(body, plan) if turn_of is responses_turn else _ChatCompletion(body, plan)
        )
        if streaming:
            with contextlib.suppress(Halted):
                await reply.stream(writer)
        else:
            await self._send_whole(writer, plan, reply.whole())

    @staticmethod
    async def _send_whole(writer: _Writer, plan: Plan, payload: dict[str, Any]) -> None:
        """A non-streamed reply takes as long as streaming it would have."""
        await anyio.sleep(plan.delay * max(len(plan.deltas) - 1, 0))
        await writer.json(200, payload)
        writer.record.deltas_sent = len(plan.deltas)

    def _scripted_error(self, text: str, directives: Directives) -> int | None:
        if directives.error is not None:
            return directives.error
        if directives.error_once is None:
            return None
        with self._lock:
            first = text not in self._failed_once
            self._failed_once.add(text)
        return directives.error_once if first else None


def main(argv: list[str] | None = None) -> int:
    """Serve as a process until SIGTERM or SIGINT, announcing the base URL on stdout."""
    parser = argparse.ArgumentParser(description="Serve the scripted OpenAI API mock.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=20, help="text deltas per reply")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between deltas")
    args = parser.parse_args(argv)
    mock = OpenAIMock(tokens=args.tokens, delay=args.delay, port=args.port)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await mock.serve(
            stopping.wait, lambda: print(f"OPENAI_BASE_URL={mock.base_url}", flush=True)
        )

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
