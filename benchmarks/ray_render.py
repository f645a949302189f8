"""`sim2sg render --ray` throughput: images per second with 1 and 2 Ray CPU workers, against the
plain single-process render of the same stages (and a byte-for-byte check of the outputs).

    .venv/bin/python benchmarks/ray_render.py --scenes 64 --size 128x128 --workers 1,2

Stages: `--scenes` clevr scenes (`sim2sg sample` + `sim2sg graph2usd`, seed 0) in a temporary
folder. Each measurement renders into a fresh output folder; the Ray figure includes the shards'
scheduling and the driver's final pass (hashing every stage, assembling labels.json), not the
cluster's start (a local cluster with `--workers` CPUs is started before the clock). Each task
renders with one torch thread (Ray sets OMP_NUM_THREADS=1 per CPU task); the plain render runs
with `--threads` torch threads.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=64)
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the plain render")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    import ray
    import torch

    from sim2sg.dataset import render_job, shards
    from sim2sg.scene import graph as sg
    from sim2sg.scene.environment import load_env
    from sim2sg.scene.sdr import sample_scene, scene_rng
    from sim2sg.usd.compile import graph2usd

    tmp = Path(tempfile.mkdtemp(prefix="ray_render_"))
    env = load_env("clevr")
    files = []
    for i in range(args.scenes):
        files.append(tmp / "graphs" / f"{i:06d}.json")
        sg.write_graph(files[-1], sample_scene(env, scene_rng(0, i)))
    graph2usd(files, tmp / "usd", seed=0)
    stages = render_job.discover_stages(tmp / "usd")

    def job(name):
        return render_job.RenderJob(out_dir=tmp / name, width=w, height=h, batch=args.batch)

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    render_job.run(stages, job("plain"), progress=False)
    plain = time.perf_counter() - t
    print(f"plain, 1 process, {args.threads} torch thread(s): {args.scenes / plain:.1f} img/s ({plain:.1f} s)")
    for n in (int(v) for v in args.workers.split(",")):
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
        t = time.perf_counter()
        shards.render_on_ray(stages, job(f"ray{n}"), progress=False)
        dt = time.perf_counter() - t
        ray.shutdown()
        same = all(filecmp.cmp(p, tmp / f"ray{n}" / p.relative_to(tmp / "plain"), shallow=False)
                   for p in (tmp / "plain").rglob("*") if p.is_file())
        print(f"ray, {n} worker(s): {args.scenes / dt:.1f} img/s ({dt:.1f} s), identical to plain: {same}")
    print(f"machine: {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
