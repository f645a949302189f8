"""`sim2sg demo`: the main job on the built-in default (clevr -> clevr-target)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from sim2sg.cli.common import fail, info, user_errors


def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder (target domain, runs, report/)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    preset: Optional[str] = typer.Option(None, "--preset", help="small (CPU, ~15 min) or full (GPU); default by device."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Render the clevr-target domain, train SDR and Sim2SG against its unlabelled images, and
    write a report: a Table-1-like table, content-gap and metric curves, a Fig.-3-like figure."""
    from sim2sg.experiments.demo import PRESETS, run_demo

    if preset is not None and preset not in PRESETS:
        fail(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    with user_errors():
        run_demo(out, device=device, preset=preset, seed=seed, log=info)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
