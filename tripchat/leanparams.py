"""Request parameters that are already JSON, sent without the `openai` client's transform.

Before every request the client walks each parameter against its TypedDict (instructions,
the whole history, every tool's JSON schema), recursing into every member of every union,
to rename aliased keys, format dates and read files. For a model call that was a quarter
of a 20-delta turn's CPU, and none of it applies: the Agents SDK hands over plain dicts,
lists and strings, and the request TypedDicts of both model APIs declare no alias and no
format (checked once per TypedDict, below).

So each parameter that is plain JSON travels through the client's own `create` inside a
`Carried` box, which the transform returns untouched; the client takes the boxes out again
just before the body is serialised (`carried_out`). The body's keys, their order and every
value are the SDK's own, byte for byte. A parameter that is not plain JSON (a date, a file,
a pydantic model, an `omit` inside a list) takes the transform as before, and so does every
parameter of a TypedDict that could rename or reformat something.
"""

from __future__ import annotations

import typing
from functools import cache, cached_property
from typing import Any

import typing_extensions
from openai._utils import PropertyInfo
from openai.resources.chat import AsyncChat
from openai.resources.chat.completions import AsyncCompletions
from openai.resources.responses import AsyncResponses
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

_SCALARS = frozenset({str, int, float, bool, type(None)})
_USED_BY_CREATE = frozenset({"stream", "response_format"})
"""Parameters `create` itself reads (to pick the TypedDict, to check a format class)."""


class Carried:
    """A plain-JSON parameter value, boxed so the client's transform leaves it alone."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


def is_json(value: object) -> bool:
    """Whether `value` is built only of dicts with str keys, lists, and JSON scalars."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is list:
        return all(is_json(item) for item in value)  # type: ignore[attr-defined]
    if kind is dict:
        return all(
            type(key) is str and is_json(item)
            for key, item in value.items()  # type: ignore[attr-defined]
        )
    return False


def _rewrites(annotation: object, seen: set[int]) -> bool:
    """Whether the transform could rename or reformat anything under `annotation`."""
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if typing_extensions.is_typeddict(annotation):
        hints = typing_extensions.get_type_hints(annotation, include_extras=True)
        return any(_rewrites(hint, seen) for hint in hints.values())
    origin = typing_extensions.get_origin(annotation)
    if origin is typing_extensions.Literal:
        return False
    if origin is typing_extensions.Annotated:
        for meta in annotation.__metadata__:  # type: ignore[attr-defined]
            if isinstance(meta, PropertyInfo) and (meta.alias or meta.format):
                return True
    return any(_rewrites(arg, seen) for arg in typing.get_args(annotation))


@cache
def _plain_fields(params: type) -> frozenset[str]:
    """The fields of a request TypedDict that may be carried; none if anything is rewritten."""
    if _rewrites(params, set()):
        return frozenset()
    return frozenset(typing_extensions.get_type_hints(params)) - _USED_BY_CREATE


def carry(params: dict[str, Any], streaming: type, other: type) -> dict[str, Any]:
    """`params` for `create`, their plain-JSON values boxed (see the module docstring)."""
    fields = _plain_fields(streaming if params.get("stream") else other)
    return {
        name: Carried(value) if name in fields and is_json(value) else value
        for name, value in params.items()
    }


def carried_out(body: object) -> object:
    """A request body with the `Carried` boxes opened, key order kept; others as they are."""
    if type(body) is not dict or not any(type(v) is Carried for v in body.values()):
        return body
    return {k: v.value if type(v) is Carried else v for k, v in body.items()}


class LeanResponses(AsyncResponses):
    """`client.responses`, whose `create` carries plain-JSON parameters past the transform."""

    async def create(self, **params: Any) -> Any:
        """The SDK's `create`, with the parameters `carry` boxed."""
        return await super().create(
            **carry(
                params,
                response_create_params.ResponseCreateParamsStreaming,
                response_create_params.ResponseCreateParamsNonStreaming,
            )
        )


class LeanCompletions(AsyncCompletions):
    """`client.chat.completions`, whose `create` carries plain-JSON parameters likewise."""

    async def create(self, **params: Any) -> Any:
        """The SDK's `create`, with the parameters `carry` boxed."""
        return await super().create(
            **carry(
                params,
                completion_create_params.CompletionCreateParamsStreaming,
                completion_create_params.CompletionCreateParamsNonStreaming,
            )
        )


class LeanChat(AsyncChat):
    """`client.chat`, whose completions are `LeanCompletions`."""

    @cached_property
    def completions(self) -> AsyncCompletions:
        """`LeanCompletions` on this client."""
        return LeanCompletions(self._client)
