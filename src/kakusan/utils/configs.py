"""Reading a config dataclass back from JSON written by an earlier (or damaged, or hand-edited) run: unknown keys and
values of the wrong type are one clear error at load time, not a crash deep inside a later computation."""
from __future__ import annotations

import dataclasses
import types
import typing


def _fits(value, hint) -> bool:
    """Whether a JSON value can stand for a field annotated ``hint`` (int, float, str, bool, their unions with None,
    lists / tuples / dicts); anything more specific is not checked."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True


def from_dict(cls, values: dict):
    """``cls(**values)`` for a dataclass, after checking every key is a field and every value fits its type; raises
    ``ValueError`` naming the key otherwise (the caller names the file)."""
    if not isinstance(values, dict):
        raise ValueError(f"expected an object for {cls.__name__}, got {type(values).__name__}")
    if not dataclasses.is_dataclass(cls):
        return cls(**values)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"unknown key {key!r} for {cls.__name__}")
        if not _fits(value, hints.get(key, typing.Any)):
            raise ValueError(f"{key} = {value!r} is not a {hints[key]}")
    return cls(**values)
