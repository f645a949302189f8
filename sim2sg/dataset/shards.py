"""Rendering on a Ray cluster: one `sim2sg render` job split into shards, run as Ray tasks.

    report = render_on_ray(stages, job, address=None)     # a local cluster; "auto", "ray://h:10001"

A shard is a contiguous range of image positions (`shard_ranges`). Each Ray task runs
`sim2sg.dataset.render_job.run(stages, job, shard=range)`: it writes its images and their label
fragments into the one dataset folder (which every worker must see: a shared file system on a
multi-node cluster), exactly as a single-process render writes them, since image i depends only on
stage i, the job's settings and the name NNNNNN (post-processing draws from (seed, name)). When
every shard has finished, the driver runs `render_job.run` once more over the whole job: it skips
every complete fragment, re-reports the stages that failed (bad files fail fast, at load) and
assembles labels.json. So the dataset is byte-identical to a single-process render of the same
stages, and re-running after a driver kill resumes: finished fragments are skipped, shard by shard.

A task that dies (worker process lost, node lost) or raises is retried by Ray (`max_retries`,
`retry_exceptions`); each retry skips the images its predecessor finished. A shard that still fails
raises `ShardError` and labels.json is not written: run the command again to resume.

Only this module imports `ray`, and only inside functions: Ray is an optional extra
(`pip install "sim2sg[ray]"`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from sim2sg.dataset import render_job
from sim2sg.errors import InputError

RAY_MISSING = 'Ray is not installed; install the extra: pip install "sim2sg[ray]" (in a checkout: pip install -e ".[ray]")'


class ShardError(RuntimeError):
    """A shard failed on Ray after its retries (one line: which images, why, what to do)."""


def shard_ranges(n: int, size: int) -> list[range]:
    """Contiguous ranges of size `size` (the last one shorter) covering positions 0 .. n-1."""
    size = max(1, int(size))
    return [range(a, min(n, a + size)) for a in range(0, n, size)]


def default_shard_size(n: int, batch: int, workers: int) -> int:
    """Shards of whole renderer batches, about four per worker (so a slow or retried shard
    delays little), at most 64 batches each."""
    batches = -(-n // max(1, batch))
    per = max(1, min(64, -(-batches // max(1, 4 * workers))))
    return per * max(1, batch)


def import_ray():
    """The `ray` module, or `InputError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray", "", RAY_MISSING) from None
    return ray


def check_address(address: str | None) -> str | None:
    """None or "local" -> None (start a local cluster); "auto", "HOST:PORT" and "ray://HOST:PORT"
    pass through. Anything else is an `InputError`."""
    if address in (None, "", "local"):
        return None
    if address == "auto" or address.startswith("ray://") or ":" in address:
        return address
    raise InputError("--ray-address", "", f"expected local, auto, HOST:PORT or ray://HOST:PORT, got {address!r}")


def connect(address: str | None, num_cpus: int | None = None):
    """Join (or start) the Ray cluster at `address` (see `check_address`) unless this process is
    already connected; returns the `ray` module. num_cpus: a local cluster's CPUs (None: all)."""
    ray = import_ray()
    if not ray.is_initialized():
        address = check_address(address)
        kwargs = {"num_cpus": num_cpus} if address is None else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=True, **kwargs)
    return ray


def _render_shard(stages: list[str], job: render_job.RenderJob, start: int, stop: int, cwd: str) -> dict:
    """The Ray task: render images start .. stop-1 of the job. Relative stage and output paths are
    the driver's, so the task works in the driver's directory (the worker serves this job only)."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    report = render_job.run([Path(s) for s in stages], job, shard=range(start, stop), progress=False)
    return {"rendered": report.rendered, "skipped": report.skipped, "failed": len(report.failures),
            "total": report.total, "undrawn": report.undrawn}


def render_on_ray(
    stages: Sequence[Path],
    job: render_job.RenderJob,
    *,
    address: str | None = None,
    gpus_per_task: float = 0.0,
    cpus_per_task: float = 1.0,
    shard_size: int | None = None,
    max_retries: int = 3,
    on_error=None,
    progress: bool = True,
) -> render_job.JobReport:
    """Render `stages` into `job.out_dir` as Ray tasks (see the module docstring) and return the
    job's `JobReport` (rendered counts the images rendered by the tasks and the driver).

    gpus_per_task > 0: tasks render on "cuda" (the GPU Ray assigns them), else on "cpu";
    `job.device` is ignored. shard_size: images per task (default `default_shard_size`).
    Raises `ShardError` when a shard fails after `max_retries` retries.
    """
    from tqdm import tqdm

    ray = connect(address)
    job = dataclasses.replace(job, device="cuda" if gpus_per_task > 0 else "cpu")
    stage_list = [str(s) for s in stages]
    workers = max(1, int(ray.cluster_resources().get("GPU" if gpus_per_task > 0 else "CPU", 1)
                         // max(gpus_per_task if gpus_per_task > 0 else cpus_per_task, 1e-9)))
    ranges = shard_ranges(len(stage_list), shard_size or default_shard_size(len(stage_list), job.batch, workers))
    task = ray.remote(_render_shard).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task,
                                             max_retries=max_retries, retry_exceptions=True)
    stages_ref = ray.put(stage_list)  # shipped once, not once per task
    cwd = os.getcwd()
    futures = {task.remote(stages_ref, job, r.start, r.stop, cwd): r for r in ranges}
    rendered = 0
    undrawn = []
    bar = tqdm(total=len(stage_list), disable=not progress, unit="img", desc="render (ray)", dynamic_ncols=True)
    try:
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            r = futures[done[0]]
            try:
                res = ray.get(done[0])
            except Exception as e:  # RayTaskError, WorkerCrashedError, ...: retries are spent
                for f in pending:
                    ray.cancel(f)
                why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise ShardError(f"{job.out_dir}: images {r.start:06d}-{r.stop - 1:06d} failed on Ray after "
                                 f"{max_retries} retries ({why}); run the command again to resume") from None
            rendered += res["rendered"]
            undrawn += res["undrawn"]
            bar.update(res["total"])
    finally:
        bar.close()
    # The driver's pass: finished fragments are skipped, failed stages re-reported, labels.json assembled.
    final = render_job.run(list(stages), dataclasses.replace(job, device="cpu"), on_error=on_error, progress=False)
    return dataclasses.replace(final, rendered=rendered + final.rendered,
                               skipped=final.total - rendered - final.rendered - len(final.failures),
                               undrawn=tuple(sorted(undrawn)) + final.undrawn)
