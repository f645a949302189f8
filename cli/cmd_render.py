"""`sim2sg render`: USD stages -> labelled dataset (images, depth, masks, labels.json, KITTI, CLEVR)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from sim2sg.cli.common import (
    EXIT_BAD_INPUT,
    fail,
    info,
    out_dir,
    parse_size,
    plural,
    seed_option,
    user_errors,
)


def render(
    source: Path = typer.Argument(..., help="A USD stage (.usd/.usda/.usdc) or a directory of them."),
    out: Path = typer.Option(..., "--out", help="Dataset directory (created; resumed when it exists)."),
    size: str = typer.Option(..., "--size", help="Image size WxH in pixels, e.g. 256x256."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch: int = typer.Option(None, "--batch", min=1,
                              help="Stages rendered per batch; default 16 on the CPU, 256 on CUDA, "
                              "fewer for large images."),
    writers: str = typer.Option("sg,coco", "--writers",
                                help="Comma-separated outputs: sg, coco, kitti, clevr, yolo, vg (coco is always written)."),
    ssaa: int = typer.Option(1, "--ssaa", min=1, help="Supersampling factor per axis."),
    no_shadows: bool = typer.Option(False, "--no-shadows", help="Render without key-light shadows."),
    env: str = typer.Option(None, "--env",
                            help="Environment name or file whose render and appearance.post tables apply (default: each "
                            "stage's own); stages without a sim2sg scene graph (any Omniverse/Isaac stage) get its "
                            "categories and predicates, with relations derived from 3D by its rules."),
    seed: int = seed_option("Seed of the appearance post-processing."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace another dataset found in OUT (images of other "
                                   "stages) instead of refusing; its files are deleted first."),
    ray: bool = typer.Option(False, "--ray", help="Render shards as Ray tasks (needs the ray extra; "
                             "docs/distributed.md); same dataset, byte for byte."),
    ray_address: str = typer.Option("local", "--ray-address", help="With --ray: local (start a local "
                                    "cluster), auto (the running one), HOST:PORT or ray://HOST:PORT."),
    ray_gpus_per_task: float = typer.Option(0.0, "--ray-gpus-per-task", min=0.0,
                                            help="With --ray: GPUs per task (> 0 renders on CUDA workers)."),
    ray_retries: int = typer.Option(3, "--ray-retries", min=0, help="With --ray: retries of a failed shard."),
) -> None:
    """Render USD stages into a labelled dataset; finished images are skipped on a re-run."""
    from sim2sg.dataset import render_job
    from sim2sg.dataset import writers as writers_mod
    from sim2sg.device import resolve_device

    width, height = parse_size(size, ssaa=ssaa)
    out_dir(out)
    batch_arg = batch
    try:
        writer_names = writers_mod.parse_writers(writers)
    except ValueError as e:
        fail(f"--writers: {e}")
    with user_errors():
        stages = render_job.discover_stages(source)
        dev = resolve_device(device)
        batch = batch or render_job.default_batch(dev.type, width, height, ssaa)
        job = render_job.RenderJob(
            out_dir=out, width=width, height=height, writers=writer_names, batch=batch, ssaa=ssaa,
            shadows=not no_shadows, env=env, seed=seed, device=str(dev), overwrite=overwrite,
        )
        on_error = lambda stage, msg: typer.echo(f"error: {msg}", err=True)  # noqa: E731
        if not ray:
            report = render_job.run(stages, job, on_error=on_error, progress=progress)
        else:
            from sim2sg.dataset import shards

            if batch_arg is None and ray_gpus_per_task > 0:
                job = dataclasses.replace(job, batch=render_job.default_batch("cuda", width, height, ssaa))
            try:
                report = shards.render_on_ray(stages, job, address=ray_address, gpus_per_task=ray_gpus_per_task,
                                              max_retries=ray_retries, on_error=on_error, progress=progress)
            except shards.ShardError as e:
                fail(str(e), code=1)
    for stage, prims in report.undrawn:
        named = ", ".join(f"{path} ({kind})" for path, kind in prims[:10])
        more = f", and {len(prims) - 10} more" if len(prims) > 10 else ""
        info(f"{stage}: skipped {plural(len(prims), 'prim')} it cannot draw: {named}{more}")
    info(f"rendered {report.rendered}, skipped {report.skipped}, failed {len(report.failures)} "
         f"of {report.total} -> {report.labels}")
    if not report.ok:
        raise typer.Exit(EXIT_BAD_INPUT)


def register(app: typer.Typer) -> None:
    app.command("render")(render)
