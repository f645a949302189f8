"""Where AdaBN helps or hurts: a trained model's mAP@0.5 on labelled target images with its
BatchNorm statistics re-estimated on unlabelled target images in all layers, in one group of
layers only, in all but one group, and for the means or the variances only.

    python benchmarks/adabn_layers.py RUN/resume.pt --target TARGET/images --eval TARGET_EVAL [--images 256]

The checkpoint must hold the *training* statistics: a loop run with `--target-bn` saves the model
with target statistics in `RUN/checkpoint.pt` and with its training statistics in
`RUN/resume.pt` (`sim2sg demo --keep-shared` keeps those). Layer groups are the BatchNorm
layers' names up to the first block index (`backbone.body.bn1`, `backbone.body.layer1`, ...).
The target statistics are estimated once, by the loop's own `--target-bn` step
(`sim2sg.loop.synthesis.target_statistics`: the first `--images` target images, the encoder
alone), then each row loads the chosen mix of training and target statistics.
"""

from __future__ import annotations

import argparse
import re
from types import SimpleNamespace

import torch

from sim2sg.loop.synthesis import target_statistics
from sim2sg.train.adabn import batchnorm_layers
from sim2sg.train.data import ImageFolder, LabelledDataset
from sim2sg.train.predict import load_predictor, predict_labelled


def group_of(name: str) -> str:
    """'backbone.body.layer2.0.bn1' -> 'backbone.body.layer2'; 'backbone.smooth.1' -> 'backbone.smooth'."""
    m = re.match(r"(.*?layer\d+)\.", name)
    return m.group(1) if m else re.sub(r"\.\d+$", "", name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--target", required=True, help="folder of unlabelled target images")
    ap.add_argument("--eval", required=True, help="labelled target dataset (labels.json)")
    ap.add_argument("--images", type=int, default=256, help="target images for the statistics")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model, meta, dev = load_predictor(args.checkpoint, args.device)
    target = ImageFolder(args.target, tuple(meta["image_size"]))
    evalset = LabelledDataset(args.eval)
    names = {id(m): n for n, m in model.named_modules()}
    bns = {names[id(m)]: m for m in batchnorm_layers(model)}

    def stats() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {n: (b.running_mean.clone(), b.running_var.clone()) for n, b in bns.items()}

    def score() -> float:
        r = predict_labelled(model, evalset, dev, batch_size=16, amp=False, categories=meta["categories"],
                             predicates=meta["predicates"])
        return float(r["metrics"]["detection"]["mAP@0.5"])

    train = stats()
    n = min(args.images, len(target))
    # exactly the loop's re-estimation (`sim2sg loop --target-bn`)
    with target_statistics(SimpleNamespace(model=model, device=dev), True, target, n):
        tgt = stats()

    def load(pick) -> None:
        for name, b in bns.items():
            mean, var = pick(name)
            b.running_mean.copy_(mean)
            b.running_var.copy_(var)

    groups = list(dict.fromkeys(group_of(n) for n in bns))
    rows = [("training statistics", lambda n: train[n]), ("target statistics, all layers", lambda n: tgt[n])]
    rows += [(f"target only in {g}", lambda n, g=g: tgt[n] if group_of(n) == g else train[n]) for g in groups]
    rows += [(f"target in all but {g}", lambda n, g=g: train[n] if group_of(n) == g else tgt[n]) for g in groups]
    rows += [("target means, training variances", lambda n: (tgt[n][0], train[n][1])),
             ("training means, target variances", lambda n: (train[n][0], tgt[n][1]))]
    print(f"{args.checkpoint}: {len(bns)} BatchNorm layers, statistics from {n} target images, "
          f"mAP@0.5 on {len(evalset)} labelled target images")
    print("| statistics | mAP@0.5 |\n|---|---|")
    with torch.no_grad():
        for label, pick in rows:
            load(pick)
            print(f"| {label} | {score():.3f} |", flush=True)
        load(lambda n: train[n])
    print("\n| layer group | mean shift (training std) | variance ratio (target / training) |\n|---|---|---|")
    for g in groups:
        ks = [n for n in bns if group_of(n) == g]
        shift = torch.cat([((tgt[k][0] - train[k][0]).abs() / train[k][1].clamp_min(1e-12).sqrt()) for k in ks])
        ratio = torch.cat([tgt[k][1] / train[k][1].clamp_min(1e-12) for k in ks])
        print(f"| {g} | {float(shift.mean()):.2f} | {float(ratio.mean()):.2f} |")


if __name__ == "__main__":
    main()
