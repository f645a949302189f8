"""Training and inference throughput of the scene-graph networks (images/s), side by side.

    .venv/bin/python benchmarks/train.py --model fast frcnn --device cpu --size 128 --batch 8 --steps 6 --align none both \
        --backbone resnet18 resnet10-half
    python benchmarks/train.py --model fast frcnn --device cuda --size 256 --batch 64 --steps 30 \
        --align none both --grl-bound 0 0.5 --infer-batch 256
    python benchmarks/train.py --model frcnn --device cuda --size 192x640 --align none both --coco-heads

`--model fast frcnn` times both networks in one run, each configuration with the same images, and
ends with the ratio fast / frcnn per configuration (training and inference).

Images are toy scenes (`sim2sg.train.toydata`, 2..`--objects` shapes with their relations), made
once in memory; data loading is not measured. Training: forward + backward + AdamW step, bf16
autocast and channels_last on CUDA (as `fit` does); with `--align` other than none, each step also
pushes an equal batch of target images through the domain classifiers (`--grl-bound B ...`: also
with the bounded GRL gradient, `bounded_backward`, which adds a second backward pass). Inference:
eval-mode forward (detections + relation pairs, split into per-image dicts), batch `--infer-batch`.
Timed after `--warmup` untimed steps, with CUDA syncs; GPU GiB is the peak allocated memory of the
configuration (reset before each). `--compile`: torch.compile the fast network's dense pass
(encoder + heads), which its static shapes allow (the first steps then compile; raise --warmup).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sim2sg.model import BACKBONES, ModelConfig, build_model
from sim2sg.train.config import TrainConfig
from sim2sg.train.steps import make_optimizer, train_step
from sim2sg.train.toydata import (
    CATEGORIES,
    PREDICATES,
    draw_scene,
    relations_from_boxes,
)

COCO_HEADS = dict(rpn_pre_nms_train=2000, rpn_post_nms_train=2000, rpn_pre_nms_test=1000, rpn_post_nms_test=1000,
                  roi_batch_per_image=512, box_head_dim=1024, detections_per_img=100)


def make_batch(n: int, size: tuple[int, int], objects: int, seed: int):
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        img, boxes, labels, _ = draw_scene(rng, size, objects)
        images.append(torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                        "relations": torch.tensor(relations_from_boxes(boxes), dtype=torch.int64).reshape(-1, 3)})
    return images, targets


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(backbone: str, size, batch: int, align: str, coco: bool, device, objects: int, bound: float = 0.0,
          arch: str = "frcnn", compile_dense: bool = False):
    """(model, optimizer, config, images, targets, target images or None), seeded, in train mode,
    as `fit` sets them up (channels_last on CUDA)."""
    torch.manual_seed(0)
    mcfg = ModelConfig(num_classes=len(CATEGORIES), num_predicates=len(PREDICATES), image_size=size, arch=arch,
                       backbone=backbone, **(COCO_HEADS if coco and arch == "frcnn" else {}))
    model = build_model(mcfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    if compile_dense and arch == "fast":
        model.compile_dense()  # after the memory format, as `sim2sg train --compile` (train.steps.new_state)
    cfg = TrainConfig(source="-", out="-", align=align, target="-" if align != "none" else None, lr=1e-4,
                      lr_warmup_steps=1, grl_weight=0.1, grl_bound=bound)
    opt = make_optimizer(model, cfg)
    images, targets = make_batch(batch, size, objects, 0)
    tgt_images = make_batch(batch, size, objects, 1)[0] if align != "none" else None
    model.train()
    return model, opt, cfg, images, targets, tgt_images


def bench(backbone: str, size, batch: int, align: str, coco: bool, device, steps: int, warmup: int, objects: int,
          bound: float = 0.0, arch: str = "frcnn", infer_batch: int | None = None, compile_dense: bool = False,
          repeat: int = 1):
    """(train img/s, inference img/s, last loss, peak GPU GiB) of one configuration; img/s are the
    best of `repeat` windows of `steps` steps."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, opt, cfg, images, targets, tgt_images = setup(backbone, size, batch, align, coco, device, objects, bound,
                                                         arch, compile_dense)
    total = warmup + steps * repeat
    for s in range(warmup):
        train_step(model, opt, (images, targets, tgt_images), cfg, s, total, device)
    sync(device)
    train_ips = 0.0
    for r in range(repeat):  # the best window: on a shared machine the others measure the neighbours
        t = time.perf_counter()
        for s in range(warmup + r * steps, warmup + (r + 1) * steps):
            logs = train_step(model, opt, (images, targets, tgt_images), cfg, s, total, device)
        sync(device)
        train_ips = max(train_ips, steps * batch / (time.perf_counter() - t))

    infer_batch = infer_batch or batch
    dev_images = [im.to(device) for im in (images * (infer_batch // batch + 1))[:infer_batch]]
    model.eval()
    amp = device.type == "cuda"
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for _ in range(max(1, warmup)):
            model(dev_images)
        sync(device)
        infer_ips = 0.0
        for _ in range(repeat):
            t = time.perf_counter()
            for _ in range(steps):
                model(dev_images)
            sync(device)
            infer_ips = max(infer_ips, steps * infer_batch / (time.perf_counter() - t))
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return train_ips, infer_ips, logs["loss"], mem


def parse_size(s: str) -> tuple[int, int]:
    if "x" in s:
        h, w = s.lower().split("x")
        return int(h), int(w)
    return int(s), int(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    ap.add_argument("--size", default="128", help="image size: N or HxW pixels")
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--model", nargs="+", default=["fast", "frcnn"], choices=["fast", "frcnn"],
                    help="networks to time, side by side (fast: sim2sg.model.fast; frcnn: Faster R-CNN)")
    ap.add_argument("--infer-batch", type=int, default=0, help="inference batch (0: the training batch)")
    ap.add_argument("--compile", action="store_true", help="fast: torch.compile its dense pass")
    ap.add_argument("--backbone", nargs="+", default=["resnet18"],
                    help="bodies to time; the fast network's own (e.g. resnet10-half) are skipped for frcnn "
                         "and compared with frcnn on resnet18")
    ap.add_argument("--align", nargs="+", default=["none"], choices=["none", "appearance", "prediction", "both"])
    ap.add_argument("--grl-bound", type=float, nargs="+", default=[0.0],
                    help="aligned configurations: GRL bounds to time (0: the plain summed gradient)")
    ap.add_argument("--coco-heads", action="store_true", help="also time torchvision's COCO-sized heads")
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time this many windows of --steps steps, report the best (a shared CPU)")
    ap.add_argument("--objects", type=int, default=8, help="at most this many objects per image")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile 5 training steps of the first configuration (torch.profiler): top ops")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels (both models)
    size = parse_size(args.size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    name_line = (f"{name}, torch {torch.__version__}, image {size[0]}x{size[1]}, "
                 f"{'bf16 autocast + channels_last' if device.type == 'cuda' else 'fp32'}"
                 f"{', fast compiled' if args.compile else ''}")
    print(f"# {name_line}")
    rows = []
    for backbone in args.backbone:
        for batch in args.batch:
            for align in args.align:
                for bound in (args.grl_bound if align != "none" else [0.0]):
                    for coco in ([False, True] if args.coco_heads else [False]):
                        for arch in args.model:
                            if (coco and arch != "frcnn") or (arch == "frcnn" and backbone not in BACKBONES):
                                continue  # COCO heads are Faster R-CNN's; light bodies the fast network's
                            tr, inf, loss, mem = bench(backbone, size, batch, align, coco, device, args.steps,
                                                       args.warmup, args.objects, bound, arch, args.infer_batch,
                                                       args.compile, args.repeat)
                            name = align + (f"/b{bound:g}" if bound > 0 else "")
                            rows.append((arch, backbone, batch, name, "coco" if coco else "small", tr, inf, loss, mem))
                            print(f"  done {rows[-1][:5]}: train {tr:.1f} img/s, infer {inf:.1f} img/s", flush=True)
    if args.profile:
        profile(args.backbone[0], size, args.batch[0], args.align[0], device, args.objects, arch=args.model[0])
    ib = f" (inference batch {args.infer_batch})" if args.infer_batch else ""
    print(f"\n# {name_line}{ib}")
    hdr = (f"{'model':<6} {'backbone':<13} {'batch':>5} {'align':<14} {'heads':<6} {'train img/s':>11} "
           f"{'infer img/s':>11} {'loss':>7} {'GPU GiB':>7}")
    print(hdr)
    print("-" * len(hdr))
    for m, b, n, a, h, tr, inf, loss, mem in rows:
        print(f"{m:<6} {b:<13} {n:>5} {a:<14} {h:<6} {tr:>11.1f} {inf:>11.1f} {loss:>7.3f} {mem:>7.2f}")
    ratios = ratio_rows(rows)
    if ratios:
        print("\nfast / frcnn, same configuration and run:")
        print(f"{'backbone':<13} {'batch':>5} {'align':<14} {'train x':>8} {'infer x':>8}")
        for b, n, a, tr, inf in ratios:
            print(f"{b:<13} {n:>5} {a:<14} {tr:>8.1f} {inf:>8.1f}")


def ratio_rows(rows: list[tuple]) -> list[tuple]:
    """(backbone, batch, align, train ratio, inference ratio) of fast over frcnn for every
    configuration timed with both (small heads). A fast-only backbone (`LIGHT_BODIES`) is compared
    with frcnn on resnet18, the default, in the same batch and alignment."""
    by = {(m, b, n, a): (tr, inf) for m, b, n, a, h, tr, inf, *_ in rows if h == "small"}
    out = []
    for (m, b, n, a), (tr, inf) in by.items():
        ref = by.get(("frcnn", b if b in BACKBONES else "resnet18", n, a))
        if m == "fast" and ref:
            out.append((b, n, a, tr / ref[0], inf / ref[1]))
    return out


def profile(backbone: str, size, batch: int, align: str, device, objects: int, steps: int = 5,
            arch: str = "frcnn") -> None:
    """Where a training step's time goes: torch.profiler over `steps` steps, top ops by self CPU
    time (launch and host-sync overhead shows up here) and by device time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    model, opt, cfg, images, targets, tgt = setup(backbone, size, batch, align, False, device, objects, arch=arch)
    for s in range(2):
        train_step(model, opt, (images, targets, tgt), cfg, s, 10, device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with tprofile(activities=acts) as prof:
        for s in range(2, 2 + steps):
            train_step(model, opt, (images, targets, tgt), cfg, s, 10, device)
        sync(device)
    ka = prof.key_averages()
    print(ka.table(sort_by="self_cpu_time_total", row_limit=25))
    if device.type == "cuda":
        print(ka.table(sort_by="self_cuda_time_total", row_limit=15))


if __name__ == "__main__":
    main()
