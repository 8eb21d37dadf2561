"""The model's streamed events, built by their `type` instead of tried against a union.

The `openai` client builds every streamed event by validating it against the union of all
~60 stream event types, and pydantic tries the members one by one: about 50 µs for a text
delta, and a millisecond or two for an event that carries the whole response
(`response.created`, `response.completed`), whose `output` and echoed `tools` are unions
again (every tool type, every output item type).

Every one of those unions is tagged: each member declares its own `type` literal, and the
SDK marks the union with that discriminator. `build` reads the tag and validates against
that one class, nested unions included, so it builds the very objects (classes, values,
fields set) the SDK's validation would. Anything it cannot place (no tag, an unknown tag,
an ambiguous union, data that does not validate) makes it give up: `lean_event` then
returns None and the SDK's own lenient construction decides.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any

from openai._utils import PropertyInfo
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, ValidationError

Convert = Callable[[Any], Any]


class Unplaced(Exception):
    """The data holds something `build` cannot place exactly as the SDK would."""


def _tagged(annotation: object) -> tuple[str, dict[str, type[BaseModel]]] | None:
    """(tag field, class by tag) of an SDK-tagged union; None if untagged or ambiguous."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    tag = next(
        (
            meta.discriminator
            for meta in annotation.__metadata__  # type: ignore[attr-defined]
            if isinstance(meta, PropertyInfo) and meta.discriminator
        ),
        None,
    )
    members = typing.get_args(typing.get_args(annotation)[0])
    if tag is None or not members:
        return None
    classes: dict[str, type[BaseModel]] = {}
    for member in members:
        field = getattr(member, "model_fields", {}).get(tag)
        if field is None or field.alias not in (None, tag):
            return None
        if typing.get_origin(field.annotation) is not typing.Literal:
            return None
        for value in typing.get_args(field.annotation):
            if value in classes:
                return None
            classes[value] = member
    return tag, classes


def _optional(annotation: object) -> object:
    """`X` for `Optional[X]`; anything else unchanged."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _one(annotation: object) -> Convert | None:
    """How to build a value of `annotation` exactly; None where pydantic alone is exact."""
    tagged = _tagged(annotation)
    if tagged is not None:
        tag, classes = tagged

        def by_tag(value: Any) -> Any:
            if type(value) is not dict or value.get(tag) not in classes:
                raise Unplaced
            return build(classes[value[tag]], value)

        return by_tag
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        model = annotation
        return (lambda value: build(model, value)) if _plan(model) else None
    return None


def _converter(annotation: object) -> Convert | None:
    """`_one`, also for a list of such values."""
    annotation = _optional(annotation)
    if typing.get_origin(annotation) is list:
        item = _one(_optional(typing.get_args(annotation)[0]))
        if item is None:
            return None
        convert = item

        def each(value: Any) -> Any:
            if type(value) is not list:
                raise Unplaced
            return [None if v is None else convert(v) for v in value]

        return each
    return _one(annotation)


_PLANNING: set[type[BaseModel]] = set()


@cache
def _plan(model: type[BaseModel]) -> tuple[tuple[str, Convert], ...]:
    """The fields of `model` (by their key in the data) that hold tagged unions."""
    if model in _PLANNING:  # a recursive model: pydantic validates the inner level itself
        return ()
    _PLANNING.add(model)
    try:
        plan = []
        for name, field in model.model_fields.items():
            convert = _converter(field.annotation)
            if convert is not None:
                plan.append((field.alias or name, convert))
        return tuple(plan)
    finally:
        _PLANNING.discard(model)


def build(model: type[BaseModel], data: Any) -> BaseModel:
    """`model` validated from `data`, its tagged unions resolved by their tags first."""
    if type(data) is not dict:
        raise Unplaced
    plan = _plan(model)
    if plan:
        data = dict(data)
        for key, convert in plan:
            value = data.get(key)
            if value is not None:
                data[key] = convert(value)
    return model.model_validate(data)


_STREAM_EVENTS = _tagged(ResponseStreamEvent)


def lean_event(data: object, cast_to: object) -> BaseModel | None:
    """`data` as the class the SDK would build for it, for a model stream; else None."""
    try:
        if cast_to is ChatCompletionChunk:
            return build(ChatCompletionChunk, data)
        if cast_to is ResponseStreamEvent and _STREAM_EVENTS is not None:
            tag, classes = _STREAM_EVENTS
            if type(data) is dict and data.get(tag) in classes:
                return build(classes[data[tag]], data)
    except (Unplaced, ValidationError):
        pass  # the SDK's lenient construction decides what it is
    return None
