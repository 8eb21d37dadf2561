"""The lean client sends the very request bytes the stock client does, on both model APIs.

Real Agents SDK runs (the trip planner's tools, a history with an image and a PDF attached,
a retried request) against the mock; the bodies are compared as sent on the wire.
"""

from __future__ import annotations

import base64
import datetime
import re
from typing import Any

import httpx2
import openai
import pytest
from agents import Runner
from openai.types.beta import agent_create_params
from openai.types.responses import response_create_params
from openai_mock import OpenAIMock

from tripchat.agent import create_trip_planner_agent
from tripchat.config import Settings
from tripchat.leanparams import Carried, carried_out, carry, is_json
from tripchat.modelclient import LeanOpenAI

pytestmark = pytest.mark.anyio

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
PDF = base64.b64encode(b"%PDF-1.4 booking LIS 2025-05-02").decode()
MOCK_ID = re.compile(rb"\b[a-z]+_[0-9a-f]{32}\b")


def _numbered_ids(body: bytes) -> bytes:
    """The body with the mock's random ids (of the tool call) numbered by first appearance."""
    seen: dict[bytes, bytes] = {}
    return MOCK_ID.sub(lambda m: seen.setdefault(m[0], b"id%d" % len(seen)), body)


def _history(last: str) -> list[Any]:
    """Two earlier turns (one with an image and a PDF attached), then `last`."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Here is my booking."},
                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
                {
                    "type": "input_file",
                    "filename": "booking.pdf",
                    "file_data": f"data:application/pdf;base64,{PDF}",
                },
            ],
        },
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Lisbon it is. «Ü»", "annotations": []}],
        },
        {"role": "user", "content": [{"type": "input_text", "text": last}]},
    ]


async def _bodies(cls: type[openai.AsyncOpenAI], mock: OpenAIMock, chat: bool) -> list[bytes]:
    """Every request body the trip planner sends for a tool call and its follow-up."""
    sent: list[bytes] = []

    async def record(request: httpx2.Request) -> None:
        sent.append(_numbered_ids(request.content))

    settings = Settings(openai_base_url=mock.base_url, use_chat_completions=chat, tracing=False)
    http = httpx2.AsyncClient(event_hooks={"request": [record]})
    async with cls(
        base_url=mock.base_url, api_key="test", max_retries=1, http_client=http
    ) as client:
        agent = create_trip_planner_agent(settings, client)
        last = '[error-once 500] [call trip_calendar {"start": "2025-05-02", "nights": 3}]'
        result = Runner.run_streamed(agent, _history(last))
        async for _ in result.stream_events():
            pass
    return sent


@pytest.mark.parametrize("chat", [False, True], ids=["responses", "chat"])
async def test_the_lean_client_sends_the_stock_clients_bytes(
    openai_mock: OpenAIMock, chat: bool
) -> None:
    stock = await _bodies(openai.AsyncOpenAI, openai_mock, chat)
    openai_mock.reset()
    lean = await _bodies(LeanOpenAI, openai_mock, chat)
    # the failed first request, its retry, and the request carrying the tool's output
    assert len(stock) == 3
    assert lean == stock
    assert b"input_file" in lean[0] or b'"file"' in lean[0]
    assert b"trip_calendar" in lean[0]


def test_plain_json_values_are_boxed_and_others_left_to_the_transform() -> None:
    params = {
        "model": "gpt-4.1",
        "stream": True,
        "input": [{"role": "user", "content": "hi"}],
        "tools": ({"type": "function", "name": "f", "parameters": {}},),
        "metadata": {"when": datetime.date(2025, 5, 2)},
        "extra_headers": {"X-Test": "1"},
    }
    carried = carry(
        params,
        response_create_params.ResponseCreateParamsStreaming,
        response_create_params.ResponseCreateParamsNonStreaming,
    )
    boxed = {name for name, value in carried.items() if isinstance(value, Carried)}
    assert boxed == {"model", "input"}  # not `stream` (create reads it), a tuple, a date
    assert carried["extra_headers"] == params["extra_headers"]
    body = carried_out({k: v for k, v in carried.items() if k != "extra_headers"})
    assert body == {k: v for k, v in params.items() if k != "extra_headers"}
    assert list(body) == [k for k in params if k != "extra_headers"]


def test_json_means_plain_dicts_lists_and_scalars() -> None:
    assert is_json({"a": [1, 2.5, "x", None, True, {"b": []}]})
    assert not is_json({"a": (1, 2)})
    assert not is_json({1: "a"})
    assert not is_json([openai.omit])
    assert not is_json({"when": datetime.datetime(2025, 5, 2)})


def test_a_request_type_that_renames_keys_is_never_carried() -> None:
    # The beta agents API declares aliases: its parameters must go through the transform.
    carried = carry(
        {"name": "x", "model": "gpt-4.1"},
        agent_create_params.AgentCreateParams,
        agent_create_params.AgentCreateParams,
    )
    assert not any(isinstance(value, Carried) for value in carried.values())
