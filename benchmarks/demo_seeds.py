"""`sim2sg demo`'s preset over several seeds: how far its one-seed report can be trusted.

    OMP_NUM_THREADS=2 python benchmarks/demo_seeds.py --seeds 0 1 2 --out out/demo_seeds

Runs the demo (`sim2sg.experiments.demo.run_demo`, the same code as `sim2sg demo`) once per
seed into OUT/seedS (the seed moves the SDR scenes, the target domain's scenes, the network's
initialisation and the loop's draws), then prints and writes OUT/seeds.md: every row's per-class
AP, mAP@0.5, R@20 with its ceiling and the share of the SDR-to-oracle gap closed as mean +- std
(ddof 1) over the seeds, the paired differences against SDR, the per-iteration content gap of
the Sim2SG row (count TV, position W1) with how many seeds it fell at every iteration, the same
table with the training BatchNorm statistics when the preset uses AdaBN (target_bn), and each
seed's wall time. A seed whose folder already holds a finished report (OUT/seedS/report/
results.json) is not run again (`--rerun` to redo it).

Seeds run in separate calls (one GPU call a seed: `bash benchmarks/gpu_session.sh seeds --seeds S`
brings back seedS_results.json) are put on one page without running anything:

    python benchmarks/demo_seeds.py --collect seed0_results.json seed1_results.json --seeds 0 1 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sim2sg import atomic
from sim2sg.experiments.demo import PRESETS, run_demo
from sim2sg.experiments.report import seeds_table
from sim2sg.loop.config import parse_threshold
from sim2sg.scene.environment import load_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("out/demo_seeds"))
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rerun", action="store_true")
    ap.add_argument("--no-target-bn", action="store_true",
                    help="the preset without AdaBN (every row predicts on the target with its training statistics)")
    ap.add_argument("--score-threshold", type=parse_threshold, default=None,
                    help="the loop row's lift threshold instead of the preset's (a score, or 'auto')")
    ap.add_argument("--collect", type=Path, nargs="+", default=None, metavar="RESULTS_JSON",
                    help="write the page of these finished reports' results.json (one per seed, in --seeds order)")
    args = ap.parse_args()
    if args.collect:
        if len(args.collect) != len(args.seeds):
            ap.error(f"--collect: {len(args.collect)} files for {len(args.seeds)} seeds (--seeds names each file's seed)")
        runs = [json.loads(f.read_text()) for f in args.collect]
        text = summary(runs, args.seeds, {}, f"{args.preset} (collected from {len(runs)} reports)",
                       machine="collected from " + ", ".join(map(str, args.collect)) + " (their machine and commit: "
                               "where they ran)")
        print(text)
        atomic.write_text(args.out / "seeds.md", text + "\n")
        return
    preset, name = args.preset, args.preset
    changes = {}
    if args.no_target_bn:
        changes["target_bn"] = False
    if args.score_threshold is not None:
        changes["score_threshold"] = args.score_threshold
    if changes:
        preset = dataclasses.replace(PRESETS[args.preset], **changes)
        name = f"{args.preset} ({', '.join(f'{k} {v}' for k, v in changes.items())})"
    runs, seconds = [], {}
    for s in args.seeds:
        folder = args.out / f"seed{s}"
        res_file = folder / "report" / "results.json"
        if args.rerun or not res_file.is_file():
            t = time.perf_counter()
            run_demo(folder, device=args.device, preset=preset, seed=s)
            seconds[s] = time.perf_counter() - t
        runs.append(json.loads(res_file.read_text()))
    text = summary(runs, args.seeds, seconds, name)
    print(text)
    atomic.write_text(args.out / "seeds.md", text + "\n")


def summary(runs: list[dict], seeds: list[int], seconds: dict, preset: str, machine: str | None = None) -> str:
    """The markdown page of a seeds run (see the module docstring); `machine` replaces the line on
    this machine and commit (collected reports ran elsewhere)."""
    cats = list(load_env("clevr").categories)
    machine = machine or (f"machine: {os.cpu_count()} CPUs, load average at the end {_load()}, torch threads "
                          f"{os.environ.get('OMP_NUM_THREADS', '?')} (OMP_NUM_THREADS); commit {_commit()}")
    lines = [f"# sim2sg demo, preset {preset}, seeds {', '.join(map(str, seeds))}", "", machine, "",
             seeds_table(runs, cats, 20), ""]
    if all(any("final_source_bn" in h for h in run.values()) for run in runs):
        # The preset predicts on the target with AdaBN (target_bn): the same rows with the
        # training BatchNorm statistics show what the re-estimation alone changes, per row.
        lines += ["The same rows predicting on the target with the training BatchNorm statistics:", "",
                  seeds_table(runs, cats, 20, final="final_source_bn"), ""]
    sim = next((r for r in runs[0] if r.startswith("all")), None)
    if sim:
        gaps = [[ph["content_gap"] for ph in run[sim]["phases"] if ph.get("content_gap")] for run in runs]
        n = min(len(g) for g in gaps)
        names = [ph["name"] for ph in runs[0][sim]["phases"] if ph.get("content_gap")][:n]
        lines += [f"content gap of {sim} (graphs trained on vs the target's true graphs), mean +- std:", "",
                  "| phase | count TV | position W1 (m) | position W1, any class (m) | scenes from predictions |",
                  "|---|---|---|---|---|"]
        for i in range(n):
            tv = [g[i]["count_tv"] for g in gaps]
            w1 = [g[i]["position_w1"] for g in gaps if g[i]["position_w1"] is not None]
            w1_any = [g[i]["position_w1_any"] for g in gaps if g[i].get("position_w1_any") is not None]
            lifted = [ph.get("lifted") for run in runs for ph in run[sim]["phases"] if ph["name"] == names[i]]
            lifted = [x for x in lifted if x is not None]
            lines.append(f"| {names[i]} | {_ms(tv)} | {_ms(w1)} | {_ms(w1_any) if w1_any else '-'} | "
                         f"{_ms(lifted, 1) if lifted else '-'} |")
        falling = {key: sum(all(g[i + 1].get(key) is not None and g[i].get(key) is not None
                                and g[i + 1][key] < g[i][key] for i in range(n - 1)) for g in gaps)
                   for key in ("count_tv", "position_w1", "position_w1_any")}
        lines += ["", f"fell at every iteration: count TV in {falling['count_tv']} of {len(runs)} seeds, "
                      f"position W1 in {falling['position_w1']} of {len(runs)}, "
                      f"position W1 of any class in {falling['position_w1_any']} of {len(runs)}", ""]
    if seconds:
        lines.append("wall time per seed (this call): " + ", ".join(f"seed {s}: {t / 60:.1f} min"
                                                                    for s, t in seconds.items()))
    return "\n".join(lines)


def _ms(v: list[float], digits: int = 3) -> str:
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} +- {np.std(v, ddof=1):.{digits}f}"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
