"""How large is the GRL's push on each backbone tensor, measured in the units Adam steps in?

    .venv/bin/python benchmarks/grl_adam.py --checkpoint RUN/sdr_phase.pt --env clevr \
        --target out/demo/clevr-target/train/images --size 128x128

Loads a loop's SDR-phase checkpoint (`LoopConfig.sdr_checkpoint`: model + AdamW state), renders
`--batch` SDR scenes of `--env` in memory and takes as many target images, and computes, per
backbone tensor (ResNet body and FPN), the gradient of the labelled losses and the gradient that the
domain losses send back through the GRLs (weight `--grl`). Each is divided elementwise by Adam's
normaliser sqrt(v) (the checkpoint's `exp_avg_sq`); the median is the size of that term's step
in units of the learning rate. Adam is invariant to the scale of a gradient that dominates a tensor,
so where the labelled gradient is small the GRL term moves the tensor at the full learning rate,
whatever its weight. Prints the tensors where the GRL term is at least half the labelled one, then
a summary line.

`--steps N` then trains N steps from the checkpoint twice on the same batches (batch `--batch`,
constant lr 2e-3, gradient norm clipped at 10 as `train_step` does): without alignment, and with
both domain classifiers at GRL weight `--grl`. It prints the gradient norms (all, domain heads, the
rest), how often the clip acted, the labelled loss of the last 10 steps, and how far each FPN and
RPN tensor moved (||W - W0|| / ||W0||) in each run. `--clip-apart` clips the domain heads'
gradients apart from the network's (an alternative, not what `train_step` does). `--bound B` adds
a third run as `train_step` trains with `--grl-bound B` (`bounded_backward`: the GRL gradient at
most B x the labelled one per network tensor, the heads clipped apart).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.model import ModelConfig, build_model
from sim2sg.render.settings import render_options
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scenes
from sim2sg.train.config import TrainConfig
from sim2sg.train.data import ImageFolder, SampleDataset
from sim2sg.train.steps import (
    DOMAIN_LOSSES,
    bounded_backward,
    domain_head_parameters,
    make_optimizer,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a loop's SDR-phase checkpoint (sdr_phase.pt)")
    ap.add_argument("--env", default="clevr")
    ap.add_argument("--target", required=True, help="folder of unlabelled target images")
    ap.add_argument("--size", default="128x128", help="WxH the checkpoint was trained at")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--grl", type=float, default=0.03, help="GRL weight lambda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0, help="also train this many steps without and with alignment")
    ap.add_argument("--clip-apart", action="store_true", help="with --steps: clip the domain heads apart")
    ap.add_argument("--bound", type=float, default=0.0, help="with --steps: also train with --grl-bound BOUND")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    torch.manual_seed(args.seed)
    env = load_env(args.env)
    ck = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = build_model(ModelConfig(num_classes=len(env.categories), num_predicates=len(env.predicates),
                                    image_size=(h, w), backbone=args.backbone))
    model.load_state_dict(ck["model"])
    model.train()
    opt = _optimizer(model, ck)
    sqrt_v = {id(p): st["exp_avg_sq"].sqrt().add(1e-8) for p, st in opt.state.items() if "exp_avg_sq" in st}

    graphs = list(sample_scenes(env, seed=args.seed + 1, count=args.batch))
    samples = synthesize(graphs, [f"{i:06d}" for i in range(args.batch)], env, render_options(env, w, h), "cpu",
                         np.random.default_rng(args.seed), texture_library(Path(args.checkpoint).parent / "grl_adam_tex"))
    ds = SampleDataset(samples, list(env.predicates))
    images, targets = zip(*[ds[i] for i in range(len(ds))])
    tf = ImageFolder(args.target, size=(h, w))
    target_images = [tf[i][0] for i in range(min(args.batch, len(tf)))]
    named = {n: p for n, p in model.named_parameters() if n.startswith("detector.backbone") and id(p) in sqrt_v}

    def grads(domain: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(args.seed)
        losses = model(list(images), list(targets), target_images=target_images, align="both", grl_lambda=args.grl)
        sum(v for k, v in losses.items() if ("domain" in k) == domain).backward()
        return {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in named.items()}

    g_task, g_grl = grads(False), grads(True)
    print(f"{'backbone tensor':48s} {'|g_task|':>9s} {'|g_grl|':>9s} {'task/sqrt(v)':>12s} {'grl/sqrt(v)':>11s}")
    rows = []
    for n, p in named.items():
        s = sqrt_v[id(p)]
        t, g = float((g_task[n].abs() / s).median()), float((g_grl[n].abs() / s).median())
        rows.append((n, float(g_task[n].norm()), float(g_grl[n].norm()), t, g))
    for n, a, b, t, g in rows:
        if g >= 0.5 * t:
            print(f"{n.removeprefix('detector.backbone.')[:48]:48s} {a:9.5f} {b:9.5f} {t:12.3f} {g:11.3f}")
    norm = lambda k: float(np.sqrt(sum(r[k] ** 2 for r in rows)))  # noqa: E731
    dominated = sum(1 for r in rows if r[4] >= 0.5 * r[3])
    print(f"\nbackbone: |g_grl| / |g_task| = {norm(2) / norm(1):.3f} (lambda {args.grl}); median step size "
          f"task {np.median([r[3] for r in rows]):.3f}, GRL {np.median([r[4] for r in rows]):.3f}; "
          f"{dominated} of {len(rows)} tensors have a GRL term >= half the task term")
    if args.steps:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        torch.use_deterministic_algorithms(True, warn_only=True)
        graphs = list(sample_scenes(env, seed=args.seed + 2, count=8 * args.batch))
        more = synthesize(graphs, [f"{i:06d}" for i in range(len(graphs))], env, render_options(env, w, h), "cpu",
                          np.random.default_rng(args.seed), texture_library(Path(args.checkpoint).parent / "grl_adam_tex"))
        train = SampleDataset(more, list(env.predicates))
        runs = {a: _train(ck, model.cfg, train, tf, args, a) for a in ("none", "both")}
        if args.bound > 0:
            runs["bounded"] = _train(ck, model.cfg, train, tf, args, "both", bound=args.bound)
        print(f"\n{args.steps} steps from the checkpoint, same batches:")
        for a, (moved, loss, norms) in runs.items():
            clipped = sum(t[0] > 10.0 for t in norms)
            print(f"  align {a:7s}: labelled loss (last 10 steps) {loss:.3f}; gradient norm all / domain heads / rest: "
                  f"median {np.median([t[0] for t in norms]):.2f} / {np.median([t[1] for t in norms]):.2f} / "
                  f"{np.median([t[2] for t in norms]):.2f}; clipped {clipped} of {len(norms)} steps")
        moved = [m for m, _, _ in runs.values()]
        print(f"{'tensor (relative change)':48s} {'no align':>9s} {'aligned':>9s}" + (f" {'bounded':>9s}" if args.bound > 0 else ""))
        for n in moved[0]:
            if (".fpn." in n or ".rpn." in n) and n.endswith("weight"):
                print(f"{n.removeprefix('detector.')[:48]:48s}" + "".join(f" {m[n]:9.4f}" for m in moved))


def _optimizer(model, ck: dict) -> torch.optim.Optimizer:
    """The trainer's AdamW (`make_optimizer`) with the checkpoint's state, at a constant lr 2e-3."""
    opt = make_optimizer(model, TrainConfig(source="-", out="-", lr=2e-3))
    opt.load_state_dict(ck["optimizer"])
    for g in opt.param_groups:
        g["lr"] = 2e-3
    return opt


def _train(ck: dict, mcfg: ModelConfig, train, target, args, align: str, bound: float = 0.0):
    """`args.steps` AdamW steps from checkpoint `ck` (`bound` > 0: as `--grl-bound bound`); returns
    ({tensor: relative change}, mean labelled loss of the last 10 steps, [(grad norm all, domain
    heads, rest)] per step)."""
    model = build_model(mcfg)
    model.load_state_dict(ck["model"])
    model.train()
    opt = _optimizer(model, ck)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    net, heads = domain_head_parameters(model)
    rng = np.random.default_rng(args.seed)
    losses, norms = [], []
    for step in range(args.steps):
        idx, tidx = rng.choice(len(train), args.batch, replace=False), rng.choice(len(target), args.batch, replace=False)
        images, targets = zip(*[train[i] for i in idx])
        torch.manual_seed(step)
        out = model(list(images), list(targets), target_images=[target[i][0] for i in tidx] if align != "none" else None,
                    align=align, grl_lambda=args.grl)
        opt.zero_grad(set_to_none=True)
        if bound > 0:
            bounded_backward(model, sum(v for k, v in out.items() if k not in DOMAIN_LOSSES),
                             sum(v for k, v in out.items() if k in DOMAIN_LOSSES), bound, clip=0.0)
        else:
            sum(out.values()).backward()
        norm = lambda ps: sum(float((p.grad.float() ** 2).sum()) for p in ps if p.grad is not None) ** 0.5  # noqa: E731
        norms.append((norm(net + heads), norm(heads), norm(net)))
        if args.clip_apart or bound > 0:
            torch.nn.utils.clip_grad_norm_(net, 10.0)
            torch.nn.utils.clip_grad_norm_(heads, 10.0)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        losses.append(sum(float(v.detach()) for k, v in out.items() if "domain" not in k))
    moved = {n: float((p.detach() - w0[n]).norm() / (w0[n].norm() + 1e-12)) for n, p in model.named_parameters()}
    return moved, float(np.mean(losses[-10:])), norms


if __name__ == "__main__":
    main()
