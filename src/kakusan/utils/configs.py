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


def class_path(cls) -> str:
    """``module:QualName`` of a class: what a config stores so that loading knows what to build (as diffusers'
    ``_class_name`` and edm2's ``class_name``)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str, base: type):
    """The class a config names by :func:`class_path`, imported on demand. Only kakusan's own modules are imported,
    and the class must derive from ``base``: a config file can choose among kakusan's classes, never run other code.
    Raises ``ValueError`` with the reason (the caller names the file)."""
    import importlib

    module, _, name = str(path).partition(":")
    if not name or not (module == "kakusan" or module.startswith("kakusan.")):
        raise ValueError(f"class_name {path!r} is not a kakusan class (expected 'kakusan.<module>:<Class>')")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ValueError(f"class_name {path!r} names no class of this kakusan version") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"class_name {path!r} is not a {base.__name__}")
    return cls
