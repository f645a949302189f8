"""Tables 1-3 of the paper, in form, on our domains.

    python benchmarks/tables.py --source clevr --target clevr-target --out out/table1 --device cuda

Renders the target domain (unlabelled training images, labelled evaluation images, and labelled
training images for the oracle only), then trains every row - SDR, pseudo-label, DA (sigma_a),
sigma_c,label, sigma_c,label + sigma_a, all (Sim2SG), oracle - with the same number of optimizer
steps, and prints the table (per-class AP, mAP@0.5, R@K with its ceiling and without graph
constraint, the share of the SDR-to-oracle gap closed) and the content gap over the iterations.
`--parallel N` trains N rows at once as separate processes (one GPU is far from saturated by one
small detector). Every row but the oracle starts with the same SDR phase (same data, steps and
seed), so that phase is trained once (OUT/sdr_phase.pt) and every row forks from it; a row's
"minutes" then exclude it (the table notes its time). The loop rows (sigma_c,label, + sigma_a,
all) also train alike until the GRLs switch on at iteration 2, so iteration 1 is trained once too
(OUT/warmup_<hash>.pt, folder OUT/warmup) and they differ only by what the aligned iterations do.
`--no-share-sdr` retrains both in every row.
A later call with the same `--out` keeps every listed row that already finished with the same
configuration (so a call can add rows to a table); `--rerun` trains them again.
Results: OUT/table.md, OUT/results.json, OUT/curves.png (metrics and content gap over the phases).
Seeds: run the table once per `--seed` into its own `--out`, then
`python benchmarks/tables.py --merge OUT0 OUT1 OUT2 --out OUT --source ... --k ...` gives mean +- std.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from sim2sg import atomic
from sim2sg.loop.config import parse_threshold
from sim2sg.experiments.report import (
    content_gap_table,
    curves,
    format_table,
    seeds_table,
)
from sim2sg.experiments.tables import (
    ROW_KEYS,
    WARMUP_ROWS,
    make_domain,
    row_name,
    run_rows,
    slug,
    train_sdr_phase,
    train_warmup,
    warmup_path,
)
from sim2sg.loop.config import LoopConfig
from sim2sg.scene.environment import load_env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="clevr")
    ap.add_argument("--target", default="clevr-target")
    ap.add_argument("--out", default="out/table")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", default=None, help=f"comma list of {', '.join(ROW_KEYS)} (default: all; with "
                    "--model fast all but gpa and sapnet, which align Faster R-CNN's proposals)")
    ap.add_argument("--n-source", type=int, default=1000, help="SDR scenes (labelled source)")
    ap.add_argument("--n-target", type=int, default=1000, help="unlabelled target training images")
    ap.add_argument("--n-eval", type=int, default=200, help="labelled target evaluation images")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--sdr-steps", type=int, default=600)
    ap.add_argument("--iter-steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--model", default="frcnn", choices=["frcnn", "fast"],
                    help="the network: frcnn (Faster R-CNN, the paper's) or fast (one-stage, batched)")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--metasim-steps", type=int, default=40, help="Meta-Sim row: SPSA steps per iteration")
    ap.add_argument("--metasim-batch", type=int, default=32, help="Meta-Sim row: scenes rendered per SPSA evaluation")
    ap.add_argument("--k", type=int, default=20, help="Recall@K column (20 for clevr, 50 for dining/driving)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", default="photometric", help="none or photometric (all rows alike)")
    ap.add_argument("--grl-weight", type=float, default=0.1)
    ap.add_argument("--grl-bound", type=float, default=0.0,
                    help="> 0: the GRL gradient is at most this times the labelled one on every network tensor "
                         "(sim2sg.train.steps.bounded_backward); 0: the paper's plain sum")
    ap.add_argument("--score-threshold", type=parse_threshold, default=0.5,
                    help="loop rows: detections lifted to 3D (a score, or 'auto': sim2sg.loop.calibrate)")
    ap.add_argument("--min-fit-iou", type=float, default=0.3, help="loop rows: the lift's box-fit gate")
    ap.add_argument("--domain", default=None, help="folder of the rendered target domain (default OUT/domain; "
                    "reused when it holds the same request)")
    ap.add_argument("--target-bn", action="store_true",
                    help="every row predicts on target images with BatchNorm statistics of the unlabelled "
                    "target images (AdaBN); the table of the training statistics is printed too")
    ap.add_argument("--target-textures", action="store_true",
                    help="loop rows texture their generated scenes with crops of the target images")
    ap.add_argument("--keep-sdr", action="store_true",
                    help="loop rows train every iteration on the generated and the SDR scenes together")
    ap.add_argument("--align-sdr-scenes", action="store_true",
                    help="with --keep-sdr: the domain classifiers see the SDR scenes too (as every table before "
                    "2026-11-25); default: only the scenes generated from the target")
    ap.add_argument("--deterministic", action="store_true",
                    help="CUDA: deterministic kernels (slower), so that a row trained again from the same shared "
                         "SDR phase and warm-up repeats; without, the same row differed by up to 0.01 mAP")
    ap.add_argument("--compile", action="store_true",
                    help="--model fast: torch.compile the network's dense pass in every row (sim2sg loop --compile); "
                         "finished rows and shared states are reused either way")
    ap.add_argument("--tag", default="", help="suffix of the loop rows' folders, so that a second call with other "
                    "loop settings adds rows beside the first call's (same SDR phase and domain)")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--render-batch", type=int, default=256,
                    help="scenes per render batch in every row (the images do not depend on it); parallel rows "
                         "that render at once each hold one batch's buffers: 64 keeps four 640x192 rows in memory")
    ap.add_argument("--no-share-sdr", action="store_true",
                    help="train every row's SDR phase (and the loop rows' iterations before the GRLs) itself "
                         "instead of forking the rows from one")
    ap.add_argument("--rerun", action="store_true",
                    help="train every listed row again; by default a row whose folder holds a finished run of the "
                         "same configuration (an earlier call with the same --out) is kept as it is")
    ap.add_argument("--collect", action="store_true",
                    help="only build the table from the rows' OUT/<row>/history.json (e.g. after a timeout)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                    help="only merge finished tables (one --out folder per seed, e.g. runs with --seed 0, 1, 2) into "
                         "OUT/table_seeds.md: mean +- std per column, paired differences against SDR and sigma_c,label")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)  # one row, in a child process
    args = ap.parse_args()
    if args.merge:
        _merge(args)
        return
    w, h = (int(v) for v in args.size.split("x"))
    out = Path(args.out)
    base = LoopConfig(env=args.source, target="", out="", iterations=args.iterations, sdr_scenes=args.n_source,
                      width=w, height=h, sdr_steps=args.sdr_steps, iter_steps=args.iter_steps,
                      batch_size=args.batch, lr=args.lr, arch=args.model, backbone=args.backbone,
                      device=args.device,
                      seed=args.seed, augment=args.augment, grl_weight=args.grl_weight, grl_bound=args.grl_bound,
                      progress=False,
                      target_bn=args.target_bn, target_textures=args.target_textures,
                      keep_sdr=args.keep_sdr, align_sdr_scenes=args.align_sdr_scenes, deterministic=args.deterministic,
                      compile=args.compile, score_threshold=args.score_threshold, min_fit_iou=args.min_fit_iou,
                      metasim_steps=args.metasim_steps, metasim_batch=args.metasim_batch,
                      render_batch=args.render_batch,
                      sdr_checkpoint=None if args.no_share_sdr else str(out / "sdr_phase.pt"))
    if args.rows is None:
        args.rows = ",".join(k for k in ROW_KEYS if args.model == "frcnn" or k not in ("gpa", "sapnet"))
    rows = [ROW_KEYS[r.strip()] for r in args.rows.split(",") if r.strip()]
    names = {r: row_name(r, args.tag) for r in rows}
    if args.collect:
        results = {}
        for r in rows:
            f = out / slug(names[r]) / "history.json"
            if f.is_file():
                h = json.loads(f.read_text())
                h.setdefault("final", (h["phases"][-1].get("summary", {}) if h.get("phases") else {}))
                if h.get("phases") and "summary_source_bn" in h["phases"][-1]:
                    h.setdefault("final_source_bn", h["phases"][-1]["summary_source_bn"])
                if "seconds" not in h:
                    h["final"] = dict(h["final"], partial=True)
                results[names[r]] = h
        _report(results, args, out, time.perf_counter(), suffix="_collected")
        return
    domain = make_domain(args.target, Path(args.domain) if args.domain else out / "domain", args.n_target, args.n_eval, w, h,
                         "cuda" if args.device in ("auto", "cuda") and _cuda() else "cpu")
    if not args.no_share_sdr:  # the loop rows also share their iterations before the GRLs switch on
        base = dataclasses.replace(base, warmup_checkpoint=warmup_path(rows, args.source, domain, out, base))
    if args.row is not None:  # child: one row, its history to out/<row>.json
        name = row_name(args.row, args.tag)
        res = run_rows([args.row], args.source, domain, out, base, log=lambda m: print(f"[{name}] {m}", flush=True),
                       tag=args.tag, keep_complete=not args.rerun)
        (out / f"{slug(name)}.json").write_text(json.dumps(res[name], default=str))
        return
    t0 = time.perf_counter()
    procs, results = [], {}
    # Rows share the host's cores: each its share of CPU threads, not all of them (oversubscribed).
    child_env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // max(1, args.parallel))))
    pending = list(rows)

    def start(needs: tuple[str, ...] = (), slots: int = args.parallel) -> None:
        """In parallel mode, start pending rows not in `needs` (rows that wait for a shared phase
        still being trained) while fewer than `slots` run."""
        while args.parallel > 1 and len(procs) < slots and any(r not in needs for r in pending):
            r = next(r for r in pending if r not in needs)
            pending.remove(r)
            procs.append((r, subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--row", r], env=child_env)))

    # The oracle does not start from the SDR phase: in parallel it trains while that phase does.
    start(needs=tuple(r for r in rows if r != "oracle"), slots=args.parallel - 1)
    if any(r != "oracle" for r in rows):
        train_sdr_phase(args.source, domain, out, base)
        _release_gpu_cache()
    if base.warmup_checkpoint:
        # The rows that do not loop need no warm-up: in parallel they train while it does.
        start(needs=WARMUP_ROWS, slots=args.parallel - 1)
        train_warmup(args.source, domain, out, base)
        _release_gpu_cache()
    if args.parallel > 1:
        while pending or procs:
            start()
            time.sleep(2)
            for r, p in list(procs):
                if p.poll() is not None:
                    procs.remove((r, p))
                    f = out / f"{slug(names[r])}.json"
                    results[names[r]] = json.loads(f.read_text()) if f.is_file() else {"final": {}, "seconds": 0}
        results = {names[r]: results[names[r]] for r in rows}
    else:
        results = run_rows(rows, args.source, domain, out, base, tag=args.tag, keep_complete=not args.rerun)
    _report(results, args, out, t0)


def _report(results: dict, args, out: Path, t0: float, suffix: str = "") -> None:
    cats = list(load_env(args.source).categories)
    table = format_table(results, cats, args.k)
    gap = content_gap_table(results)
    if any("final_source_bn" in h for h in results.values()):
        table += ("\n\nthe same rows, predicting on the target with the training BatchNorm statistics "
                  "(no AdaBN):\n" + format_table(results, cats, args.k, final="final_source_bn"))
    import torch

    dev = torch.cuda.get_device_name(0) if _cuda() else platform.processor() or platform.machine()
    shared = out / "sdr_phase" / "history.json"
    note = ""
    if shared.is_file():
        note = f"; shared SDR phase {json.loads(shared.read_text()).get('seconds', 0) / 60:.1f} min (not in the rows' minutes)"
    warm = out / "warmup" / "history.json"
    if warm.is_file():
        phases = json.loads(warm.read_text()).get("phases", [])[1:]  # its SDR phase is the shared one
        note += (f"; the loop rows' shared warm-up ({', '.join(p['name'] for p in phases)}) "
                 f"{sum(p.get('seconds', 0) for p in phases) / 60:.1f} min (not in their minutes)")
    text = (f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}\n"
            f"device: {dev}; wall {time.perf_counter() - t0:.0f} s{note}\n\n{table}\n\ncontent gap (generated vs target graphs):\n{gap}\n")
    atomic.write_text(out / f"table{suffix}.md", text)
    atomic.write_text(out / f"results{suffix}.json", json.dumps(results, default=str))
    curves(results, out / f"curves{suffix}.png", k=args.k)
    print(text)


def _merge(args) -> None:
    runs = []
    for d in args.merge:
        f = next((Path(d) / n for n in ("results_collected.json", "results.json") if (Path(d) / n).is_file()), None)
        if f is None:
            sys.exit(f"error: {d}: no results_collected.json or results.json (run or --collect that table first)")
        try:
            r = json.loads(f.read_text())
        except ValueError as e:
            sys.exit(f"error: {f}: not JSON ({e})")
        if not isinstance(r, dict) or not all(isinstance(h, dict) for h in r.values()):
            sys.exit(f"error: {f}: expected an object of rows ({{row name: history}}), as tables.py writes")
        runs.append(r)
    cats = list(load_env(args.source).categories)
    text = f"merged: {' '.join(args.merge)}\n\n{seeds_table(runs, cats, args.k)}\n"
    if all(any("final_source_bn" in h for h in run.values()) for run in runs):
        text += ("\nthe same rows, predicting on the target with the training BatchNorm statistics (no AdaBN):\n"
                 + seeds_table(runs, cats, args.k, final="final_source_bn") + "\n")
    atomic.write_text(Path(args.out) / "table_seeds.md", text)
    print(text)


def _release_gpu_cache() -> None:
    """Hand this process's cached CUDA memory back to the driver once a shared phase has been
    trained here: the parent then only waits, while the rows it started need the memory (four
    Faster R-CNN rows at 640x192 ran out of it beside the parent's cache)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
