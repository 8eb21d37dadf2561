"""What every tool shares: the error a bad argument raises, and reading a date argument."""

from __future__ import annotations

import re
from datetime import date

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ToolError(ValueError):
    """A bad argument, described so that the model (or a user) can correct it."""


def parse_date(value: str) -> date:
    if not _ISO_DATE.fullmatch(value.strip()):
        raise ToolError(f"dates must be YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ToolError(f"{value!r} is not a real calendar date") from None
