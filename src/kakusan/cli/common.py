"""What every ``kakusan`` sub-command shares: the typer app, the one-line error handling and small parsers."""
from __future__ import annotations

import typer

from .. import KakusanError

# rich_markup_mode=None: help texts are plain, so "[default]" in square brackets is shown, not eaten as markup
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="kakusan (拡散): train, sample, guide, distil and probe diffusion models.")


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KakusanError(f"expected comma-separated numbers, got {text!r}") from None


def _pair(text: str | None, flag: str) -> tuple[float, float] | None:
    values = _floats(text)
    if values is not None and len(values) != 2:
        raise KakusanError(f"{flag} takes LO,HI (got {text!r})")
    return tuple(values) if values else None


DEBUG = {"on": False}  # set by --debug: failures keep their traceback


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show the Python traceback of a failure.")):
    """kakusan (拡散): train, sample, guide, distil and probe diffusion models."""
    DEBUG["on"] = debug


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _run(fn):
    """Run ``fn``; every failure reaches the user as one line. User errors (bad paths, options, data:
    :class:`KakusanError`) and the machine's (an ``OSError``: disk full, permissions) exit with code 2; anything else is
    a bug in kakusan: exit 1 and a request to rerun with ``--debug``, which shows every traceback."""
    try:
        return fn()
    except Exception as e:
        if DEBUG["on"]:
            raise
        if isinstance(e, KakusanError):
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        if isinstance(e, OSError):
            where = f"{e.filename}: " if e.filename else ""
            typer.echo(f"error: {where}{e.strerror or _first_line(e)}", err=True)
            raise typer.Exit(2)
        typer.echo(f"error: internal error ({type(e).__name__}: {_first_line(e)}); this is a bug in kakusan: "
                   "rerun with --debug for the traceback and report it", err=True)
        raise typer.Exit(1)


PRECISION_HELP = ("auto (bf16 autocast where the CPU has AMX-BF16 or the GPU has bf16, fp32 otherwise) | fp32 | bf16; "
                  "the choice is recorded with the output.")
