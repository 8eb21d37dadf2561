"""The per-request context the store and the server scope every operation by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking. The store reads only ``user_id``: any object with one works.

    ``base_url`` is where this server is reached (``https://host/``), for the absolute
    URLs a response hands the browser (uploads, previews, downloads).
    """

    user_id: str
    base_url: str = "http://localhost/"
