"""Accuracy for a training budget: held-out source mAP@0.5 and R@K (vs. its ceiling) of each network.

    python benchmarks/accuracy.py --model fast frcnn --device cuda --seconds 120 --train 2000 --test 200
    .venv/bin/python benchmarks/accuracy.py --model fast --device cpu --size 64 --train 16 --test 8 --steps 6 --batch 4
    .venv/bin/python benchmarks/accuracy.py --model fast --backbone resnet18 resnet10-half --device cpu --size 64 \
        --train 256 --test 64 --steps 300 --batch 8

Renders `--train` scenes of `--env` (the SDR sampler, seeds 0..N-1) and `--test` held-out scenes
(other seeds) in memory with `sim2sg.dataset.synthesize`, then for each `--model` trains a fresh
network (`sim2sg.train.steps`, as `sim2sg train` does: AdamW, warm-up + cosine, bf16 autocast and
channels_last on CUDA, no augmentation) for `--steps` optimizer steps or for a wall-clock budget
of `--seconds` (the step count is then fixed from the speed of steps 10-30, which lie in the
learning-rate warm-up, so the cosine schedule spans the budget), and scores the held-out scenes
with `sim2sg.eval.evaluate` (the same metrics as `sim2sg eval`). Prints one table last.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.eval import evaluate
from sim2sg.eval.groundtruth import GroundTruth, ImageGT
from sim2sg.model import BACKBONES_OF, ModelConfig
from sim2sg.render.settings import render_options
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scene, scene_rng
from sim2sg.train.config import TrainConfig
from sim2sg.train.data import SampleDataset
from sim2sg.train.predict import outputs_to_record, predict
from sim2sg.train.steps import new_state, train_steps


def render(env, first: int, n: int, size, device, seed: int, texture_dir: Path) -> SampleDataset:
    graphs = [sample_scene(env, scene_rng(seed, i)) for i in range(first, first + n)]
    samples = synthesize(graphs, [f"s{i:06d}" for i in range(first, first + n)], env,
                         render_options(env, size[1], size[0], seed=seed), device, np.random.default_rng([seed, first]),
                         texture_dir, workers=0)
    return SampleDataset(samples, list(env.predicates))


def ground_truth(ds: SampleDataset, env) -> GroundTruth:
    images = tuple(ImageGT(image_id=i, file_name=f"{i}", boxes=t["boxes"].numpy().astype(np.float64),
                           labels=t["labels"].numpy(), ignore=np.zeros(len(t["labels"]), bool),
                           relations=t["relations"].numpy())
                   for i, t in enumerate(ds.targets))
    return GroundTruth("sim2sg", "<memory>", {k + 1: c for k, c in enumerate(env.categories)},
                       {k + 1: p for k, p in enumerate(env.predicates)}, images)


def score(model, ds: SampleDataset, env, device, batch: int, k: int) -> tuple[dict, float]:
    """(metrics of `evaluate`, inference img/s incl. the copy to the host)."""
    cats = list(env.categories)
    records = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for s in range(0, len(ds), batch):
        idx = range(s, min(len(ds), s + batch))
        outs = predict(model, [ds[i][0] for i in idx], device)
        records += [{"image_id": i, "file_name": f"{i}", **outputs_to_record(o, cats)} for i, o in zip(idx, outs)]
    ips = len(ds) / (time.perf_counter() - t)
    preds = {"format": "sim2sg-predictions", "version": 1, "predicate_names": ["__background__", *env.predicates],
             "images": records}
    return evaluate(ground_truth(ds, env), preds, ks=(k,)), ips


def train(arch: str, backbone: str, args, env, source, device) -> tuple:
    """Train one network; returns (model, steps, seconds, train img/s)."""
    cfg = TrainConfig(source="<memory>", out="-", batch_size=args.batch, lr=args.lr, lr_warmup_steps=args.lr_warmup,
                      device=str(device), seed=args.seed, tensorboard=False, progress=False, arch=arch)
    mcfg = ModelConfig(num_classes=len(env.categories), num_predicates=len(env.predicates), image_size=args.size,
                       arch=arch, backbone=backbone)
    total = args.steps or 10**9
    state = new_state(cfg, mcfg, total)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    if args.steps:
        train_steps(state, cfg, source, None, args.steps)
    else:
        if args.lr_warmup < 30:
            raise SystemExit("--seconds needs --lr-warmup >= 30 (the step count is fixed during the warm-up)")
        train_steps(state, cfg, source, None, 10)
        sync()
        t = time.perf_counter()
        train_steps(state, cfg, source, None, 20)
        sync()
        rate = 20 / (time.perf_counter() - t)
        state.total = max(30, int(args.seconds * rate))
        while state.step < state.total and time.perf_counter() - t0 < args.seconds * 1.2:
            train_steps(state, cfg, source, None, min(100, state.total - state.step))
    sync()
    secs = time.perf_counter() - t0
    return state.model, state.step, secs, state.step * args.batch / secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["fast"], choices=["fast", "frcnn"])
    ap.add_argument("--env", default="clevr")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=256, help="square image size, pixels")
    ap.add_argument("--train", type=int, default=2000, help="training scenes")
    ap.add_argument("--test", type=int, default=200, help="held-out scenes")
    ap.add_argument("--seconds", type=float, default=120.0, help="training budget per model (wall clock)")
    ap.add_argument("--steps", type=int, default=0, help="> 0: train exactly this many steps instead")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-warmup", type=int, default=100)
    ap.add_argument("--backbone", nargs="+", default=["resnet18"],
                    help="bodies to train each --model on (the fast network's own, e.g. resnet10-half, fast only)")
    ap.add_argument("--k", type=int, default=20, help="R@K")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.size = (args.size, args.size)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    env = load_env(args.env)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tex = texture_library(Path(tmp))
        source = render(env, 0, args.train, args.size, device, args.seed, tex)
        held = render(env, 10**6, args.test, args.size, device, args.seed, tex)  # scene seeds no training scene has
    print(f"# rendered {args.train} + {args.test} {args.env} scenes at {args.size[0]}px in {time.perf_counter() - t:.0f} s",
          flush=True)
    rows = []
    for arch, backbone in [(a, b) for b in args.backbone for a in args.model if b in BACKBONES_OF[a]]:
        model, steps, secs, ips = train(arch, backbone, args, env, source, device)
        m, infer = score(model, held, env, device, 2 * args.batch, args.k)
        rel = m.get("relations") or {}
        r = (rel.get("graph_constraint") or {}).get(f"R@{args.k}")
        ceil = ((rel.get("ceiling") or {}).get("graph_constraint") or {}).get(f"R@{args.k}")
        rows.append((arch, backbone, steps, secs, ips, infer, m["detection"]["mAP@0.5"], r, ceil))
        print(f"  done {arch} {backbone}: {steps} steps in {secs:.0f} s", flush=True)
        del model
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n# {name}, {args.env} {args.size[0]}x{args.size[1]}, {args.train} train / {args.test} held-out scenes, "
          f"batch {args.batch}, " + (f"{args.steps} steps" if args.steps else f"budget {args.seconds:g} s"))
    hdr = (f"{'model':<6} {'backbone':<13} {'steps':>6} {'train s':>8} {'train img/s':>11} {'infer img/s':>11} {'mAP@0.5':>8} "
           f"{'R@' + str(args.k):>7} {'ceiling':>8} {'R/ceil':>7}")
    print(hdr)
    print("-" * len(hdr))
    for arch, backbone, steps, secs, ips, infer, mAP, r, ceil in rows:
        frac = r / ceil if r is not None and ceil else float("nan")
        print(f"{arch:<6} {backbone:<13} {steps:>6} {secs:>8.0f} {ips:>11.1f} {infer:>11.1f} {mAP:>8.3f} {_f(r):>7} {_f(ceil):>8} "
              f"{frac:>7.3f}")


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    main()
