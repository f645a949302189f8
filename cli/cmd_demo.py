"""`sim2sg demo`: the main job on the built-in default (clevr -> clevr-target)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from sim2sg.cli.common import fail, info, out_dir, seed_option, user_errors


def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder (target domain, runs, report/)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    preset: Optional[str] = typer.Option(None, "--preset", help="small (2-core CPU, 80 px, ~9-15 min) or full "
                                         "(GPU, 256 px, ~8 min on an H100); default by device."),
    seed: int = seed_option(),
    model: Optional[str] = typer.Option(None, "--model", help="The network: fast (both presets) or frcnn "
                                        "(the paper's Faster R-CNN; the full preset with it trains ~30 min on an H100)."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the fast network's dense pass (not with "
                                 "--model frcnn; on the CPU this needs a C++ compiler; docs/models.md)."),
    keep_shared: bool = typer.Option(False, "--keep-shared", help="Keep the shared SDR phase and the runs' resume "
                                     "points (deleted at the end by default; each row keeps its model)."),
) -> None:
    """Render the clevr-target domain, train SDR, Sim2SG and the oracle against it, and write a
    report to OUT/report/index.html: a Table-1-like table with the gap closed, content-gap and
    metric curves, a Fig.-3-like figure."""
    from sim2sg.experiments.demo import PRESETS, run_demo

    if preset is not None and preset not in PRESETS:
        fail(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if model is not None and model not in ("frcnn", "fast"):
        fail(f"--model {model!r}: expected frcnn or fast")
    out_dir(out)
    with user_errors():
        run_demo(out, device=device, preset=preset, seed=seed, arch=model, log=info, keep_shared=keep_shared,
                 compile=compile_)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
