"""The per-request context the store and the server scope every operation by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking. The store reads only ``user_id``: any object with one works."""

    user_id: str
