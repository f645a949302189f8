"""`sim2sg` entry point. Each command lives in its own module with a `register(app)` function; the
library never imports this package. Heavy imports (torch, pxr) happen inside the commands."""

from __future__ import annotations

import os

import typer

# torch's OpenMP threads spin-wait by default; on a busy 2-core machine that slows rendering and
# training tens of times. Must be set before torch is first imported (the commands import it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sim2sg.cli import cmd_demo, cmd_eval, cmd_loop, cmd_render, cmd_scene, cmd_train

app = typer.Typer(
    name="sim2sg",
    help="Self-supervised real-to-sim scene generation: synthetic data that matches your real data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain (click) help: rich's boxed tables cut long option names ("--target-textur…") on an
    # 80-column terminal.
    rich_markup_mode=None,
)

for _module in (cmd_scene, cmd_render, cmd_train, cmd_loop, cmd_eval, cmd_demo):
    _module.register(app)


def main() -> None:
    app()
