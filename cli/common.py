"""Shared CLI plumbing: turn library `InputError`s (and a diverged training run) into one clear line
and a non-zero exit."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from sim2sg.checks import image_size
from sim2sg.errors import DivergedError, InputError

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 1  # the input was fine; the run's settings made it diverge


@contextlib.contextmanager
def user_errors():
    """Print `InputError` (and failures on named paths: OSError with a file name) as a single `error: FILE: field: message` line and
    exit with status 2, and a diverged training run (`DivergedError`: the step, the losses, what to
    change) as one `error:` line with status 1; anything else is a bug and keeps its traceback."""
    try:
        yield
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except DivergedError as e:
        # what was written before the step (checkpoints, resume points, logs) stays as it was
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT_DIVERGED) from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        # a path the user named is in the way (a file where a folder goes, no permission): their input
        typer.echo(f"error: {e.filename or ''}: {e.strerror or e}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as e:
        # any other failure on a named path (no such folder, a read-only or full disk, a name too
        # long, /proc): the system's reason, one line; an OSError without a path stays a traceback
        if e.filename is None:
            raise
        typer.echo(f"error: {e.filename}: {e.strerror or e}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


# numpy's SeedSequence takes any non-negative integer, torch's generators 64 bits: every --seed
# fits both, so that a seed one command takes the next one takes too.
SEED_MAX = 2**64 - 1


def seed_option(help: str | None = None):
    """The --seed option of every command: an integer in [0, 2**64 - 1] (typer's usage error
    otherwise; a negative or wider seed was a traceback from numpy or torch)."""
    return typer.Option(0, "--seed", min=0, max=SEED_MAX, help=help)


def parse_size(text: str, option: str = "--size", ssaa: int = 1) -> tuple[int, int]:
    """(width, height) of a WxH option, or one error line and exit 2 (`sim2sg.checks.image_size`:
    malformed, non-positive or larger than the renderer holds, the limit in the message)."""
    try:
        return image_size(text, option, ssaa)
    except InputError as e:
        fail(str(e))


def out_dir(path: Path, option: str = "--out") -> Path:
    """`path` as an output folder: an error line and exit 2 when an existing file is in the way."""
    if path.exists() and not path.is_dir():
        fail(f"{option} {path}: exists and is not a folder")
    return path


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def info(message: str) -> None:
    print(message, file=sys.stderr)


def plural(n: int, noun: str) -> str:
    """"1 graph", "2 graphs"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
