"""Typed sections whose errors read as the library's own: pydantic models, and pydantic's errors put in our words.

Every part of a config is a :class:`Section` (a pydantic model: strict types, unknown keys refused).
A field says how an invalid value of it is worded with a :class:`Says` marker, and a section's own
check (a rule across its fields) raises :class:`Problem`; :func:`check` validates and turns the first
error into one message that names the owner, the key, the value and what is valid:

    class Fewshot(Section):
        k: Annotated[int, Field(ge=1), Says("{path}: {value!r} is not valid; give K examples per class, "
                                            "an integer >= 1")] = 16

    check(Fewshot, {"k": True}, Where("fewshot", "fewshot"), ConfigError)
    # ConfigError: fewshot.k: True is not valid; give K examples per class, an integer >= 1

This module imports neither torch nor anything of the library's.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, replace
from typing import Annotated, Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Tag, TypeAdapter, ValidationError

__all__ = ["Where", "Says", "Problem", "Section", "check", "explain", "choices_text"]


@dataclass(frozen=True)
class Where:
    """Where a value sits, as messages name it: its ``path`` (``methods[0].train_seeds``), the ``place``
    of the section that holds it (``methods[0]``) and that section's ``owner`` (``methods[0] (soft)``)."""

    path: str = ""
    place: str = "config"
    owner: str = ""

    def __post_init__(self):
        if not self.owner:
            object.__setattr__(self, "owner", self.place)

    def key(self, key: str) -> Where:
        path = f"{self.path}.{key}" if self.path else str(key)
        return Where(path, path, path)

    def index(self, i: int) -> Where:
        path = f"{self.path}[{i}]"
        return Where(path, path, path)

    def tag(self, tag: str) -> Where:
        return replace(self, owner=f"{self.place} ({tag})")


def choices_text(choices, last: str = ", ") -> str:
    items = [str(c) for c in choices]
    return ", ".join(items[:-1]) + last + items[-1] if len(items) > 1 else "".join(items)


class Says:
    """How an invalid value is worded: a text with ``{path}``, ``{place}``, ``{owner}``, ``{key}`` and
    ``{value!r}`` (the value's path, its section's place and owner, its key, the value), or a function
    ``(section, here, key, value, error) -> str``. ``deep``: whether it also words errors inside the
    value (an item of a list); a section's field leaves them to the section below when it is not."""

    def __init__(self, text: str | Callable[..., str], deep: bool = True):
        self.text, self.deep = text, deep

    def message(self, section: Where, here: Where, key, value, error: dict) -> str:
        if callable(self.text):
            return self.text(section, here, key, value, error)
        out = self.text
        for name, shown in (("{path}", here.path), ("{place}", section.place), ("{owner}", section.owner),
                            ("{key}", str(key)), ("{value!r}", repr(value))):
            out = out.replace(name, shown)
        return out

    def __repr__(self) -> str:
        return f"Says({self.text!r})"


class Problem(ValueError):
    """A section's own check failed (raised in a model validator). ``at``: ``place`` or ``owner`` puts
    the section's name in front of ``text``; None leaves ``text`` whole."""

    def __init__(self, text: str, at: str | None = "place"):
        super().__init__(text)
        self.text, self.at = text, at

    def message(self, where: Where) -> str:
        return self.text if self.at is None else f"{getattr(where, self.at)}: {self.text}"


class Section(BaseModel):
    """A part of a config: strict types (YAML ``true`` is not a count, ``"3"`` is not a number) and no
    unknown keys. Subclasses word their unknown, missing and malformed keys by overriding the hooks."""

    # a field's docstring is its description in the JSON Schema (what an editor shows on hover)
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True, use_attribute_docstrings=True)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    @classmethod
    def unknown_key(cls, at: Where, key, data) -> str:
        return f"{at.place}: unknown key {key!r}; allowed keys: {', '.join(cls.keys())}"

    @classmethod
    def missing_key(cls, at: Where, key) -> str:
        return f"{at.place}: missing key {key!r}"

    @classmethod
    def not_a_mapping(cls, at: Where, value) -> str:
        return f"{at.place} must be a mapping with keys {', '.join(cls.keys())}; got {value!r}"

    @classmethod
    def child_of(cls, parent: Where, key: str) -> Where:
        """Where this section sits as the value of ``key`` in a section at ``parent``."""
        return parent.key(key)


def _peel(annotation, value) -> tuple[Any, list]:
    """The annotation without ``Annotated`` (its markers returned) and without ``None`` in an optional."""
    markers = []
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation, *more = typing.get_args(annotation)
            markers += more
        elif _is_union(annotation) and type(None) in typing.get_args(annotation):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return typing.Union[tuple(rest)], markers
            annotation = rest[0]
        else:
            return annotation, markers


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _member(annotation, tag):
    """The member of a tagged union that ``tag`` names (a ``Tag``, or a section's literal ``name``)."""
    for member in typing.get_args(annotation):
        inner, markers = _peel(member, None)
        if any(isinstance(m, Tag) and m.tag == tag for m in markers):
            return member
        name = getattr(inner, "model_fields", {}).get("name") if isinstance(inner, type) else None
        if name is not None and typing.get_origin(name.annotation) is Literal and tag in typing.get_args(name.annotation):
            return member
    return None


def _problem(error: dict) -> Problem | None:
    found = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
    return found if isinstance(found, Problem) else None


def _walk(annotation, value, at: Where, error: dict) -> str | None:
    """Follow ``error``'s location through the annotations, to the marker or section that words it."""
    loc, section, key = list(error["loc"]), at, None
    while True:
        annotation, markers = _peel(annotation, value)
        says = next((m for m in markers if isinstance(m, Says)), None)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None
        if not loc and _problem(error) is not None:
            return _problem(error).message(at)
        if says is not None and (says.deep or not loc):
            return says.message(section, at, key, value, error)
        if not loc:
            malformed = error["type"] in ("model_type", "model_attributes_type", "dict_type")
            return model.not_a_mapping(at, value) if model is not None and malformed else None
        step = loc.pop(0)
        if model is not None:
            data = value if isinstance(value, Mapping) else {}
            if step not in model.model_fields:
                return model.unknown_key(at, step, data)
            if error["type"] == "missing" and not loc:
                return model.missing_key(at, step)
            field = model.model_fields[step]
            section, key, value = at, step, data.get(step)
            annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            inner = _peel(annotation, value)[0]
            at = inner.child_of(at, step) if isinstance(inner, type) and issubclass(inner, Section) else at.key(step)
        elif typing.get_origin(annotation) in (list, tuple) and isinstance(step, int):
            annotation, key = typing.get_args(annotation)[0], step
            value, at = value[step], at.index(step)
        elif _is_union(annotation) and _member(annotation, step) is not None:
            annotation, at = _member(annotation, step), at.tag(step)
        else:
            return None


def explain(err: ValidationError, annotation, data, at: Where) -> str:
    """One message for a validation error: unknown keys first, then missing ones, then the rest in order."""
    errors = err.errors(include_url=False)
    rank = {"extra_forbidden": 0, "missing": 1}
    first = min(range(len(errors)), key=lambda i: (rank.get(errors[i]["type"], 2), i))
    error = errors[first]
    found = _walk(annotation, data, at, error)
    if found is not None:
        return found
    path = at.path + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in error["loc"])
    return f"{path.lstrip('.') or at.place}: {error.get('input')!r} is not valid ({error['msg'].lower()})"


_ADAPTERS: dict = {}


def _adapter(annotation) -> TypeAdapter:
    key = id(annotation)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = (annotation, TypeAdapter(annotation))
    return _ADAPTERS[key][1]


def check(annotation, data, at: Where, error: type[Exception]):
    """``data`` validated as ``annotation`` (a section, or any type); an error raises ``error`` with the
    message of :func:`explain`."""
    try:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation.model_validate(data)
        return _adapter(annotation).validate_python(data)
    except ValidationError as err:
        raise error(explain(err, annotation, data, at)) from None
