"""`tripchat smoke --url URL`: a canned two-turn conversation against a running server.

It speaks the ChatKit wire protocol with the standard library only (so it runs
wherever tripchat is installed), prints what came back, and says whether the
server is healthy: exit 0 if every check passed, 1 otherwise.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

TURNS = (
    "Plan 3 days in Lisbon from London next month, relaxed pace, mid-range budget.",
    "Add a day trip to Sintra.",
)


@dataclass
class Check:
    """One expectation and whether the server met it."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Smoke:
    """A conversation against `url`, recording checks as it goes."""

    url: str
    user_id: str = "smoke-test"
    token: str | None = None
    timeout: float = 120.0
    say: Callable[[str], None] = print
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        self.say(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return ok

    def _request(self, path: str, body: dict[str, Any] | None = None) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "X-User-Id": self.user_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        return urllib.request.Request(self.url.rstrip("/") + path, data=data, headers=headers)

    def post_json(self, body: dict[str, Any]) -> Any:
        with urllib.request.urlopen(self._request("/chatkit", body), timeout=self.timeout) as r:
            return json.load(r)

    def post_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with urllib.request.urlopen(self._request("/chatkit", body), timeout=self.timeout) as r:
            for raw in r:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("data: "):
                    yield json.loads(line[6:])

    def turn(self, body: dict[str, Any], label: str) -> str | None:
        """Send one streaming request; returns the thread id, printing the reply as it streams."""
        started = time.monotonic()
        thread_id: str | None = body["params"].get("thread_id")
        first_delta: float | None = None
        reply, errors = "", []
        for event in self.post_stream(body):
            kind = event.get("type")
            if kind == "thread.created":
                thread_id = event["thread"]["id"]
            elif kind == "thread.item.updated" and event["update"]["type"].endswith("text_delta"):
                first_delta = first_delta or time.monotonic() - started
            elif kind == "thread.item.done" and event["item"]["type"] == "assistant_message":
                reply = "".join(part["text"] for part in event["item"]["content"])
            elif kind == "error":
                errors.append(event.get("message") or event.get("code"))
        self.say(f"--- {label} reply ---\n{reply.strip()}\n---")
        timing = f"first text after {first_delta:.2f}s" if first_delta else "no text streamed"
        self.check(
            f"{label}: streamed a reply",
            bool(reply) and not errors,
            "; ".join([timing, f"{time.monotonic() - started:.2f}s in all", *map(str, errors)]),
        )
        return thread_id

    def run(self) -> bool:
        """The whole conversation; True when every check passed."""
        try:
            with urllib.request.urlopen(self._request("/healthz"), timeout=10) as r:
                self.check("GET /healthz", r.status == 200, r.read().decode())
            message: dict[str, Any] = {"content": [], "attachments": [], "inference_options": {}}
            first = {**message, "content": [{"type": "input_text", "text": TURNS[0]}]}
            thread_id = self.turn({"type": "threads.create", "params": {"input": first}}, "turn 1")
            if not self.check("a thread was created", thread_id is not None):
                return False
            second = {**message, "content": [{"type": "input_text", "text": TURNS[1]}]}
            self.turn(
                {
                    "type": "threads.add_user_message",
                    "params": {"thread_id": thread_id, "input": second},
                },
                "turn 2",
            )
            thread = self.post_json(
                {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
            )
            kinds = [item["type"] for item in thread["items"]["data"]]
            self.check(
                "the thread kept both turns",
                kinds.count("user_message") == 2 and kinds.count("assistant_message") >= 2,
                f"title {thread.get('title')!r}, items {kinds}",
            )
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            self.check("the server answered", False, repr(exc))
        healthy = all(check.ok for check in self.checks)
        self.say("healthy" if healthy else "UNHEALTHY")
        return healthy
