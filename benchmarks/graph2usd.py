"""Sample + compile to .usdc: milliseconds per scene, with a breakdown.

    python benchmarks/graph2usd.py --env clevr --count 200

Target (issue 2): at most 10 ms per CLEVR scene on the 2-core build machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from sim2sg.scene.environment import load_env
from sim2sg.scene.look import randomize_look
from sim2sg.scene.sdr import sample_scene, scene_rng
from sim2sg.usd.compile import look_rng, write_textures
from sim2sg.usd.stage import build_stage, write_stage


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="clevr")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--format", default="usdc", choices=["usdc", "usda"])
    args = ap.parse_args()
    env = load_env(args.env)
    mesh_of = {c: env.spec(c).mesh for c in env.categories}
    # Warm the asset caches once (they are built once per process in real runs too).
    g0 = sample_scene(env, scene_rng(0, 0))
    build_stage(g0, randomize_look(g0, env, look_rng(0, "w")), mesh_of, list(env.categories), list(env.predicates))
    runs = []
    for rep in range(args.repeats):
        t = {"sample": 0.0, "look": 0.0, "build": 0.0, "write": 0.0}
        with tempfile.TemporaryDirectory() as d:
            out = Path(d)
            for i in range(args.count):
                t0 = time.perf_counter()
                g = sample_scene(env, scene_rng(rep, i))
                t1 = time.perf_counter()
                look = randomize_look(g, env, look_rng(0, f"{i:06d}"))
                t2 = time.perf_counter()
                stage = build_stage(g, look, mesh_of, list(env.categories), list(env.predicates))
                t3 = time.perf_counter()
                write_textures(out, look.textures())
                write_stage(stage, out / f"{i:06d}.{args.format}")
                t4 = time.perf_counter()
                for k, a, b in (("sample", t0, t1), ("look", t1, t2), ("build", t2, t3), ("write", t3, t4)):
                    t[k] += b - a
        runs.append({k: v / args.count * 1000 for k, v in t.items()})
    best = min(runs, key=lambda r: sum(r.values()))
    total = [sum(r.values()) for r in runs]
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"env={args.env} count={args.count} repeats={args.repeats} format={args.format}")
    print("| stage | ms/scene (best run) |")
    print("|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| **total** | **{min(total):.2f}** (median of runs {statistics.median(total):.2f}) |")


if __name__ == "__main__":
    main()
