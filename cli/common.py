"""Shared CLI plumbing: turn library `InputError`s into one clear line and a non-zero exit."""

from __future__ import annotations

import contextlib
import sys

import typer

from sim2sg.errors import InputError

EXIT_BAD_INPUT = 2


@contextlib.contextmanager
def user_errors():
    """Print `InputError` (and missing files) as a single `error: FILE: field: message` line and
    exit with status 2; anything else is a bug and keeps its traceback."""
    try:
        yield
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def info(message: str) -> None:
    print(message, file=sys.stderr)


def plural(n: int, noun: str) -> str:
    """"1 graph", "2 graphs"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
