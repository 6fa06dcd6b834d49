"""Options written once: a config dataclass field with its default and help text is the command-line option, the
``--config FILE`` key and the run's JSON key.

:func:`option` declares a field with its help; :func:`with_options` turns the fields of one or more dataclasses into
typer options of a command (flag ``--field-name``, help ending in the field's default), and hands the command a dict
of the values the user gave — so that a default is never copied, and an option not given can be told from one given
with its default value (a resumed run, a ``--config FILE``).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from typing import Optional

MISSING = dataclasses.MISSING


def option(default=MISSING, help: str = "", *, factory=None, flag: str | None = None, panel: str | None = None,
           shown: str | None = None, cli: bool = True):
    """A dataclass field with its help text. ``flag``: the option's name if not the field's; ``panel``: the group it
    is listed under in ``--help``; ``shown``: the default as the help prints it (else derived from the default);
    ``cli=False``: no command-line option (a JSON-only key)."""
    meta = {"help": help, "flag": flag, "panel": panel, "shown": shown, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base(hint):
    """(type, optional) of an annotation: ``float | None`` -> (float, True)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return hint, False


def _is_sequence(hint) -> bool:
    return hint in (list, tuple) or typing.get_origin(hint) in (list, tuple)


def _shown(f: dataclasses.Field) -> str:
    if f.metadata.get("shown"):
        return f.metadata["shown"]
    value = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def cli_fields(*classes) -> dict[str, tuple[dataclasses.Field, object]]:
    """{name: (field, type hint)} of the command-line fields of ``classes``, first definition of a name winning."""
    out = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli", False) and f.name not in out:
                out[f.name] = (f, hints[f.name])
    return out


def parse_value(text, hint, name: str):
    """A command-line value for a field: comma-separated numbers for list / tuple fields, else as typer parsed it."""
    from .. import KakusanError

    base, _ = _base(hint)
    if not _is_sequence(base) or not isinstance(text, str):
        return text
    item = (typing.get_args(base) or (float,))[0]
    item = float if item is Ellipsis else item
    try:
        values = [item(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KakusanError(f"--{name.replace('_', '-')} takes comma-separated numbers, got {text!r}") from None
    return tuple(values) if typing.get_origin(base) is tuple or base is tuple else values


def _parameter(name: str, f: dataclasses.Field, hint) -> inspect.Parameter:
    import typer

    base, _ = _base(hint)
    flag = "--" + (f.metadata.get("flag") or name).replace("_", "-")
    help = f"{f.metadata.get('help', '')} [{_shown(f)}]".strip()
    if base is bool:
        decls, cli_type = (f"{flag}/--no-{flag[2:]}",), Optional[bool]
    else:
        decls, cli_type = (flag,), Optional[str if _is_sequence(base) else base]
    default = typer.Option(None, *decls, help=help, rich_help_panel=f.metadata.get("panel"), show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=cli_type)


def with_options(*classes, panels: tuple[str, ...] = ()):
    """Decorator: the command gains one option per command-line field of ``classes`` and receives ``given``, the
    dict {field: value} of those the user gave (values parsed to the field's type). ``panels``: the order in which
    the groups of options are listed by ``--help``."""
    fields = cli_fields(*classes)
    rank = {p: i for i, p in enumerate(panels)}
    fields = dict(sorted(fields.items(), key=lambda kv: rank.get(kv[1][0].metadata.get("panel"), len(rank))))

    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "given"]
        clash = {p.name for p in own} & set(fields)
        if clash:
            raise TypeError(f"{fn.__name__}: parameters {sorted(clash)} are also option fields")
        params = own + [_parameter(name, f, hint) for name, (f, hint) in fields.items()]

        @functools.wraps(fn, assigned=("__module__", "__name__", "__qualname__", "__doc__"), updated=())
        def command(**kwargs):
            given = {}
            for name, (_, hint) in fields.items():
                value = kwargs.pop(name, None)
                if value is not None:
                    given[name] = parse_value(value, hint, name)
            return fn(**kwargs, given=given)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def redefault(cls, name: str, default=MISSING, *, factory=None):
    """A subclass's field ``name`` of ``cls`` with another default, keeping its help (a GAN's own batch size...)."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
