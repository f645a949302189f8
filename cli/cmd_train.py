"""`sim2sg train` and `sim2sg predict`: thin wrappers over `sim2sg.train` (torch is imported
inside the commands so that `sim2sg --help` stays fast)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from sim2sg.cli.common import fail, info, user_errors

TRAIN_ALIGNS = ("none", "appearance", "prediction", "both")


class Backbone(str, Enum):
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"
    resnet101 = "resnet101"


class Ramp(str, Enum):
    fixed = "fixed"
    dann = "dann"


class Optim(str, Enum):
    adamw = "adamw"
    sgd = "sgd"


def train_cmd(
    source: Optional[Path] = typer.Option(None, "--source", help="Labelled sim2sg dataset folder (labels.json + images)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoint.pt, config.json, tb/ (TensorBoard)."),
    target: Optional[Path] = typer.Option(None, "--target", help="Folder of unlabelled target images (e.g. KITTI image_2/)."),
    align: str = typer.Option("none", "--align", help="With --source: none, appearance (D^a), prediction (D^c), both. "
                              "With --env (the Sim2SG loop): none (SDR), appearance, label, label+appearance, all."),
    env: Optional[str] = typer.Option(None, "--env", help="Run the Sim2SG loop: the source environment (name or .toml); "
                                      "synthetic data is generated and rendered in memory."),
    loop: int = typer.Option(3, "--loop", min=0, help="Sim2SG: synthesis-analysis iterations after the SDR phase."),
    method: str = typer.Option("sim2sg", "--method", help="Sim2SG: sim2sg, pseudo-label (self-training) or oracle."),
    size: str = typer.Option("256x256", "--size", help="Sim2SG: rendered / training image size WxH."),
    sdr_scenes: int = typer.Option(1000, "--sdr-scenes", min=1, help="Sim2SG: SDR scenes rendered for the first phase."),
    sdr_steps: int = typer.Option(2000, "--sdr-steps", min=0, help="Sim2SG: optimizer steps on SDR data."),
    iter_steps: int = typer.Option(1000, "--iter-steps", min=0, help="Sim2SG: optimizer steps per iteration."),
    score_thresh: float = typer.Option(0.5, "--score-thresh", min=0.0, max=1.0, help="Sim2SG: detections lifted to 3D."),
    min_fit_iou: float = typer.Option(0.3, "--min-fit-iou", min=0.0, max=1.0,
                                      help="Sim2SG: drop detections whose box no object of the class projects onto "
                                      "(best box IoU below this; 0 keeps all)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Sim2SG: labelled target data scored after each phase."),
    target_graphs: Optional[Path] = typer.Option(None, "--target-graphs", help="Sim2SG: true target graphs (content gap)."),
    oracle_data: Optional[Path] = typer.Option(None, "--oracle-data", help="Sim2SG: labelled target training data (--method oracle)."),
    keep_usd: bool = typer.Option(False, "--keep-usd", help="Sim2SG: save every generated stage under OUT/usd/."),
    val: Optional[Path] = typer.Option(None, "--val", help="Labelled dataset to predict (and score) after training."),
    backbone: Backbone = typer.Option(Backbone.resnet18, "--backbone"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Initial weights: a sim2sg checkpoint, a model or ResNet state dict."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Total optimizer steps (overrides --epochs)."),
    batch: int = typer.Option(8, "--batch", min=1),
    lr: float = typer.Option(1e-3, "--lr", min=0.0),
    optimizer: Optim = typer.Option(Optim.adamw, "--optimizer"),
    grl_weight: float = typer.Option(0.1, "--grl-weight", min=0.0, help="GRL lambda (DA Faster R-CNN uses 0.1)."),
    grl_ramp: Ramp = typer.Option(Ramp.fixed, "--grl-ramp", help="fixed, or DANN's 2/(1+exp(-10p))-1 ramp."),
    grl_bound: float = typer.Option(0.0, "--grl-bound", min=0.0, help="> 0: per network tensor, the "
                                    "gradient through the GRLs is scaled to at most this times the labelled "
                                    "gradient, and the domain classifiers are clipped apart (0: off, the paper's way)."),
    align_warmup: int = typer.Option(0, "--align-warmup", min=0, help="Steps before the GRLs switch on."),
    augment: Optional[str] = typer.Option(None, "--augment", help="Photometric augmentation of the labelled images: "
                                          "none or photometric (colour, blur, noise; boxes unchanged). "
                                          "Default: photometric with --env, none with --source."),
    target_bn: bool = typer.Option(False, "--target-bn", help="Sim2SG: predict on target images with BatchNorm "
                                   "statistics re-estimated on the unlabelled target images (AdaBN)."),
    target_textures: bool = typer.Option(False, "--target-textures", help="Sim2SG: texture the generated "
                                         "scenes with crops of the target images (each object with the pixels "
                                         "in its predicted box, the ground with a rectified ground patch)."),
    keep_sdr: bool = typer.Option(False, "--keep-sdr", help="Sim2SG: every iteration trains on the generated "
                                  "scenes together with the SDR scenes."),
    align_sdr_scenes: bool = typer.Option(False, "--align-sdr-scenes", help="Sim2SG with --keep-sdr: the domain "
                                          "classifiers see the SDR scenes too (default: only the scenes generated "
                                          "from the target, whose content is aligned with it)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=1),
    image_every: int = typer.Option(500, "--image-every", min=0, help="Steps between TensorBoard image grids (0: off)."),
    no_amp: bool = typer.Option(False, "--no-amp", help="Disable bf16 autocast on CUDA."),
    deterministic: bool = typer.Option(False, "--deterministic", help="CUDA: deterministic kernels, so that a "
                                       "run repeats (slower; on the CPU they are always on)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt (its stored config wins)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    model_set: list[str] = typer.Option([], "--set", help="Model setting KEY=VALUE (repeatable), e.g. "
                                        "rpn_post_nms_train=300, roi_batch_per_image=128, message_passing=0; "
                                        "see sim2sg.model.ModelConfig."),
) -> None:
    """Train the scene-graph network on labelled synthetic data, optionally aligning it to
    unlabelled target images through gradient reversal (Sim2SG section 4.2); with --env, run the
    whole Sim2SG loop (Algorithm 1) against the --target images."""
    if env is not None:
        with user_errors():
            from sim2sg.loop.run import LoopConfig, run

            if target is None:
                fail("--env (the Sim2SG loop) needs --target IMAGES")
            w, h = _size(size)
            cfg = LoopConfig(env=env, target=str(target), out=str(out), method=method, align=align,
                             iterations=loop, sdr_scenes=sdr_scenes, width=w, height=h, sdr_steps=sdr_steps,
                             iter_steps=iter_steps, batch_size=batch, lr=lr, backbone=backbone.value,
                             grl_weight=grl_weight, grl_bound=grl_bound, score_threshold=score_thresh, min_fit_iou=min_fit_iou,
                             augment=augment or "photometric",
                             target_bn=target_bn, target_textures=target_textures, keep_sdr=keep_sdr,
                             align_sdr_scenes=align_sdr_scenes,
                             eval_data=str(eval_data) if eval_data else None,
                             target_graphs=str(target_graphs) if target_graphs else None,
                             oracle_data=str(oracle_data) if oracle_data else None, keep_usd=keep_usd,
                             device=device, amp=not no_amp, deterministic=deterministic, seed=seed,
                             progress=progress, model=_overrides(model_set))
            run(cfg, log=info)
        return
    if source is None:
        fail("give --source DATASET (plain training) or --env ENV --target IMAGES (the Sim2SG loop)")
    if align not in TRAIN_ALIGNS:
        fail(f"--align {align!r}: with --source, one of {', '.join(TRAIN_ALIGNS)}")
    with user_errors():
        from sim2sg.train.engine import TrainConfig, fit

        overrides = _overrides(model_set)
        cfg = TrainConfig(
            source=str(source), out=str(out), target=str(target) if target else None, val=str(val) if val else None,
            align=align, backbone=backbone.value, weights=str(weights) if weights else None,
            epochs=epochs, steps=steps, batch_size=batch, lr=lr, optimizer=optimizer.value,
            grl_weight=grl_weight, grl_ramp=grl_ramp.value, grl_bound=grl_bound, align_warmup_steps=align_warmup,
            augment=augment or "none", device=device, seed=seed, workers=workers, checkpoint_every=checkpoint_every,
            image_every=image_every, amp=not no_amp, deterministic=deterministic, progress=progress, model=overrides,
        )
        path = fit(cfg, resume=resume)
        info(f"wrote {path}")


def _overrides(model_set: list[str]) -> dict:
    overrides = {}
    for item in model_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    fail(f"--size {text!r}: expected WxH, e.g. 256x256")


def predict_cmd(
    images: Path = typer.Argument(..., help="Folder of png/jpg images."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint.pt written by `sim2sg train`."),
    out: Path = typer.Option(..., "--out", help="Output folder: <stem>.json graphs, <stem>.png drawings, predictions.json."),
    score_thresh: float = typer.Option(0.5, "--score-thresh", min=0.0, max=1.0, help="Keep objects scoring at least this."),
    rel_thresh: float = typer.Option(0.5, "--rel-thresh", min=0.0, max=1.0, help="Keep predicates scoring at least this."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Predict one scene graph per image (2D boxes, relations; 3D fields are placeholders marked
    attributes.lifted = false) and draw it."""
    with user_errors():
        from sim2sg.train.predict import predict_images

        written = predict_images(checkpoint, images, out, device=device, score_thresh=score_thresh, rel_thresh=rel_thresh)
        info(f"wrote {len(written)} scene graphs to {out}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("predict")(predict_cmd)
