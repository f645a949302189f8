"""`fit`: plain training on a labelled dataset (`sim2sg train`), torchvision-references style.

    cfg = TrainConfig(source="data/clevr_train", target="data/clevr_real/images", align="both", out="runs/a")
    fit(cfg)                      # writes runs/a/checkpoint.pt, runs/a/tb/, runs/a/config.json
    fit(cfg, resume=True)         # continues from runs/a/checkpoint.pt after a kill

The steps themselves are `sim2sg.train.steps.train_steps`, the same loop the Sim2SG loop's phases
use; checkpoints are `sim2sg.train.checkpoint`'s.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from sim2sg import atomic
from sim2sg.errors import InputError
from sim2sg.model import ModelConfig
from sim2sg.train import distributed
from sim2sg.train.align import network_heads, parse_align
from sim2sg.train.checkpoint import (
    FILE_NAME,
    load_checkpoint,
    load_weights,
    restore,
    save_checkpoint,
)
from sim2sg.train.config import TrainConfig
from sim2sg.train.data import PRELOAD_BYTES, ImageFolder, LabelledDataset, check_vocabulary
from sim2sg.train.predict import predict, predict_labelled
from sim2sg.train.steps import add_align_heads, new_state, train_steps


# What a resumed run takes from the call instead of its checkpoint: where and how it runs, not
# what it computes (compile gives the same checkpoints).
RESUME_MAY_CHANGE = ("out", "device", "workers", "progress", "compile")


def _shown(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list, tuple)) else str(value)


def fit(cfg: TrainConfig, resume: bool = False, log=None, given: dict[str, str] | None = None) -> Path:
    """Train per `cfg`; returns the path of the final checkpoint (`cfg.out/checkpoint.pt`).

    resume=True continues from `cfg.out/checkpoint.pt` (the config stored there wins for
    everything that shapes the run; `out`, `device`, `workers`, `progress`, `compile` may change).
    Writes `config.json`, TensorBoard logs under `tb/`, and, when `cfg.val` is given,
    `val_predictions.json` + `val_metrics.json` at the end. log: a function of one line (e.g.
    a resumed run that has nothing left to do says so). given: {config field: the option that set
    it} for the settings the user gave (the CLI's command-line options, not its defaults): on
    resume, those that differ from the stored run's are named in one line as ignored, so that a
    changed --lr or --batch is never silently dropped. Under torchrun (after
    `distributed.init_from_env`) every rank trains its slice of each batch and rank 0 writes.
    """
    out = Path(cfg.out)
    ckpt_path = out / FILE_NAME
    ckpt = None
    if not resume and ckpt_path.is_file():
        # a new run would replace its checkpoint and config and leave its val_*.json and tb/ events
        # beside the new run's
        raise InputError(ckpt_path, "", "this folder holds a training run already: pass --resume to continue it, or "
                                        "choose another --out (or delete this folder first)")
    if resume:
        if not ckpt_path.is_file():
            raise InputError(ckpt_path, "", "nothing to resume: checkpoint not found (drop --resume to start)")
        ckpt = load_checkpoint(ckpt_path)
        if not isinstance(ckpt.get("config"), dict) or not ckpt["config"].get("source"):
            raise InputError(ckpt_path, "config", "missing: this checkpoint does not record its run's settings, so it "
                                                  "cannot be resumed (start a new run with --weights)")
        try:
            stored = TrainConfig.from_dict(ckpt["config"])
        except (TypeError, ValueError) as e:
            raise InputError(ckpt_path, "config", f"not a training config ({e})") from None
        if cfg.steps is not None and cfg.steps != stored.steps and log is not None:
            # the schedules (learning rate, GRL ramp) span the stored total: another one is another run
            made = f"--steps {stored.steps}" if stored.steps else f"--epochs {stored.epochs}"
            log(f"--steps {cfg.steps} ignored: the run in {out} was made with {made} and --resume continues it "
                f"as stored (to train further, start a new run with --weights {ckpt_path})")
        changed = [f"{opt} (the run's: {_shown(getattr(stored, f))})" for f, opt in sorted((given or {}).items())
                   if f not in RESUME_MAY_CHANGE and f != "steps" and hasattr(stored, f)
                   and getattr(cfg, f) != getattr(stored, f)]
        if changed and log is not None:
            log(f"ignored on --resume, which continues the run in {out} as stored: {', '.join(changed)} "
                f"(to train with other settings, start a new run with --weights {ckpt_path})")
        cfg = dataclasses.replace(stored, **{f: getattr(cfg, f) for f in RESUME_MAY_CHANGE})
    cfg.validate()
    distributed.check_batch(cfg.batch_size)

    # Worker processes would each hold a copy: preload only when the main process loads.
    source = LabelledDataset(cfg.source, preload_bytes=PRELOAD_BYTES if cfg.workers == 0 else 0)
    info = source.info
    if not info.predicates:
        raise InputError(source.labels_path, "predicate_categories", "no predicates: nothing for the relation head to learn")
    if not any(len(t["labels"]) for t in source.targets):
        raise InputError(source.labels_path, "annotations", f"no object box of at least 1x1 px in its {len(source)} "
                         "images: nothing for the detector to learn")
    target = ImageFolder(cfg.target, size=info.image_size) if (cfg.target and cfg.align != "none") else None
    meta = {"categories": list(info.categories), "predicates": list(info.predicates), "env": info.env,
            "image_size": list(info.image_size)}
    mcfg = ModelConfig.from_dict(dict(num_classes=len(info.categories), num_predicates=len(info.predicates),
                                      image_size=info.image_size, arch=cfg.arch, backbone=cfg.backbone,
                                      **cfg.model))
    if cfg.val:  # before training, not after it
        check_vocabulary(cfg.val, meta["categories"], meta["predicates"], "--val")
    spe = max(1, len(source) // cfg.batch_size)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * spe
    state = new_state(cfg, mcfg, total)
    if ckpt is not None:
        if ckpt["meta"].get("categories") != meta["categories"] or ckpt["meta"].get("predicates") != meta["predicates"]:
            raise InputError(ckpt_path, "meta", "the checkpoint was trained on other categories/predicates than --source")
        restore(state, ckpt)
    elif cfg.weights:
        loaded = load_weights(state.model, cfg.weights, (meta["categories"], meta["predicates"]))
        if log is not None:
            log(f"--weights {cfg.weights}: {loaded.count} tensors loaded"
                + (f"; {len(loaded.skipped)} tensors of the class and predicate heads kept at their initialisation: "
                   f"{loaded.note}" if loaded.skipped else ""))
    del ckpt
    add_align_heads(state, network_heads(parse_align(cfg.align, loop=False)))  # GPA, SAPNet

    main = distributed.is_main()  # under torchrun, rank 0 alone writes (checkpoints: save_checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        atomic.write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    writer = None
    if cfg.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"), purge_step=state.step if state.step else None)

    def after_step(step: int, logs: dict) -> None:
        if writer is not None and (step % cfg.log_every == 0 or step == total):
            for k, v in logs.items():
                writer.add_scalar(f"loss/{k}" if k.startswith("loss") else f"train/{k}", v, step)
        if step % cfg.checkpoint_every == 0 or step == total:
            save_checkpoint(ckpt_path, state, cfg, meta, epoch=(step - 1) // spe)
        if writer is not None and cfg.image_every > 0 and step % cfg.image_every == 0:
            log_images(writer, state.model, source, target, state.device, step, meta, amp=cfg.amp)
            state.model.train()

    if resume and state.step >= total and log is not None:
        log(f"{ckpt_path}: the run already finished its {total} steps; nothing to train")
    t0, s0 = time.perf_counter(), state.step
    try:
        while state.step < total:  # an epoch at a time: its mean losses go to TensorBoard
            epoch = state.step // spe
            stop = min(total, (epoch + 1) * spe)
            means = train_steps(state, cfg, source, target, stop - state.step, workers=cfg.workers,
                                after_step=after_step, progress=f"epoch {epoch}" if cfg.progress else None)
            if writer is not None:
                for k, v in means.items():
                    if k.startswith("loss"):
                        writer.add_scalar(f"epoch/{k}", v, state.step)
    finally:
        if writer is not None:
            writer.flush()
    if state.step == s0 and not ckpt_path.is_file():
        save_checkpoint(ckpt_path, state, cfg, meta, epoch=state.step // spe)
    elapsed = time.perf_counter() - t0
    if writer is not None and state.step > s0:
        writer.add_scalar("train/images_per_s", (state.step - s0) * cfg.batch_size / max(elapsed, 1e-9), state.step)
    if cfg.val and main:
        from sim2sg.eval import write_metrics

        res = predict_labelled(state.model, LabelledDataset(cfg.val), state.device, cfg.batch_size, cfg.amp,
                               meta["categories"], meta["predicates"])
        atomic.write_text(out / "val_predictions.json", json.dumps(res["predictions"]) + "\n")
        write_metrics(out / "val_metrics.json", res["metrics"])
        if writer is not None:
            det = (res["metrics"].get("detection") or {}).get("mAP@0.5")
            if det is not None:
                writer.add_scalar("val/mAP50", det, state.step)
    if writer is not None:
        writer.close()
    return ckpt_path


def log_images(writer, model, source, target, device, step: int, meta: dict, n: int = 4, amp: bool = True) -> None:
    """TensorBoard grids of predictions drawn on the first `n` source and target images. Eval-mode
    forward: no random draws and no BatchNorm updates, so logging does not perturb training."""
    from torchvision.utils import make_grid

    from sim2sg.train.draw import draw_graph

    for tag, ds in (("source", source), ("target", target)):
        if ds is None:
            continue
        imgs = [ds[i][0] for i in range(min(n, len(ds)))]
        outs = predict(model, imgs, device, amp)
        drawn = []
        for im, o in zip(imgs, outs):
            rgb = (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            pic = draw_graph(rgb, {k: v.numpy() for k, v in o.items()}, meta["categories"], meta["predicates"])
            drawn.append(torch.from_numpy(pic).permute(2, 0, 1))
        writer.add_image(f"predictions/{tag}", make_grid(drawn, nrow=len(drawn)), step)
