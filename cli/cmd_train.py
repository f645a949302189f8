"""`sim2sg train` and `sim2sg predict`: thin wrappers over `sim2sg.train` (torch is imported
inside the commands so that `sim2sg --help` stays fast)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from sim2sg.cli import common
from sim2sg.cli.common import fail, info, out_dir, plural, seed_option, user_errors

GRL_BOUND_HELP = ("> 0: per network tensor, the gradient through the GRLs is scaled to at most this times "
                  "the labelled gradient, and the domain classifiers are clipped apart (0: off, the paper's way).")
DETERMINISTIC_HELP = "CUDA: deterministic kernels, so that a run repeats (slower; on the CPU they are always on)."
MODEL_SET_HELP = ("Model setting KEY=VALUE (repeatable), e.g. rpn_post_nms_train=300, roi_batch_per_image=128, "
                  "message_passing=0; see sim2sg.model.ModelConfig.")


COMPILE_HELP = ("torch.compile the fast network's dense pass (encoder + heads; --model fast only): faster "
                "steps after the first ones, which compile (on the CPU this needs a C++ compiler). Checkpoints "
                "are the same either way; --resume may change it.")

MODEL_HELP = ("The network: frcnn (Faster R-CNN + relation head, the paper's) or fast (a one-stage centre "
              "detector + pair relation head, batched end to end; docs/models.md).")


class Model(str, Enum):
    frcnn = "frcnn"
    fast = "fast"


class Backbone(str, Enum):
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"
    resnet101 = "resnet101"
    resnet10_half = "resnet10-half"  # the fast network's light bodies (sim2sg.model.fast.LIGHT_BODIES)
    resnet18_half = "resnet18-half"


BACKBONE_HELP = ("The ResNet body (no weights). resnet10-half and resnet18-half (half ResNet-18's widths, "
                 "1 or 2 blocks a stage) are the fast network's only; docs/models.md.")


class Ramp(str, Enum):
    fixed = "fixed"
    dann = "dann"


class Optim(str, Enum):
    adamw = "adamw"
    sgd = "sgd"


# `train_cmd` parameters -> (TrainConfig field, option) where the names differ.
_FIELDS = {"batch": ("batch_size", "--batch"), "model": ("arch", "--model"), "no_amp": ("amp", "--no-amp"),
           "align_warmup": ("align_warmup_steps", "--align-warmup"), "model_set": ("model", "--set"),
           "compile_": ("compile", "--compile")}


def given_settings(ctx: typer.Context) -> dict[str, str]:
    """{TrainConfig field: option} for the options given on the command line (not defaults)."""
    # by name: typer may bring its own copy of click, whose ParameterSource is another enum
    return dict(_FIELDS.get(p, (p, f"--{p.replace('_', '-')}")) for p in ctx.params
                if getattr(ctx.get_parameter_source(p), "name", None) == "COMMANDLINE")


def train_cmd(
    ctx: typer.Context,
    source: Optional[Path] = typer.Option(None, "--source", help="Labelled sim2sg dataset folder (labels.json + images)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoint.pt, config.json, tb/ (TensorBoard)."),
    target: Optional[Path] = typer.Option(None, "--target", help="Folder of unlabelled target images (e.g. KITTI image_2/)."),
    align: str = typer.Option("none", "--align", help="Domain alignment (docs/cli.md, 'Alignment'): none, appearance "
                              "(D^a on features), prediction (D^c on outputs), both, or the baselines gpa (GPA) and "
                              "sapnet (SAPNet; --model frcnn)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Labelled dataset to predict (and score) after training."),
    model: Model = typer.Option(Model.frcnn, "--model", help=MODEL_HELP),
    backbone: Backbone = typer.Option(Backbone.resnet18, "--backbone", help=BACKBONE_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Initial weights: a sim2sg checkpoint (of other class names: all but its class and predicate heads), a model or ResNet state dict."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Total optimizer steps (overrides --epochs)."),
    batch: int = typer.Option(8, "--batch", min=1),
    lr: float = typer.Option(1e-3, "--lr", min=0.0),
    optimizer: Optim = typer.Option(Optim.adamw, "--optimizer"),
    grl_weight: float = typer.Option(0.1, "--grl-weight", min=0.0, help="GRL lambda (DA Faster R-CNN uses 0.1)."),
    grl_ramp: Ramp = typer.Option(Ramp.fixed, "--grl-ramp", help="fixed, or DANN's 2/(1+exp(-10p))-1 ramp."),
    grl_bound: float = typer.Option(0.0, "--grl-bound", min=0.0, help=GRL_BOUND_HELP),
    align_warmup: int = typer.Option(0, "--align-warmup", min=0, help="Steps before the GRLs switch on."),
    augment: str = typer.Option("none", "--augment", help="Photometric augmentation of the labelled images: "
                                "none or photometric (colour, blur, noise; boxes unchanged)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    seed: int = seed_option(),
    workers: int = typer.Option(0, "--workers", min=0, max=256, help="DataLoader worker processes."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=1),
    image_every: int = typer.Option(500, "--image-every", min=0, help="Steps between TensorBoard image grids (0: off)."),
    no_amp: bool = typer.Option(False, "--no-amp", help="Disable bf16 autocast on CUDA."),
    deterministic: bool = typer.Option(False, "--deterministic", help=DETERMINISTIC_HELP),
    compile_: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt (its stored config wins; options given that differ from "
                                "it are named as ignored). Without it, an OUT holding a run is refused."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    model_set: list[str] = typer.Option([], "--set", help=MODEL_SET_HELP),
    env: Optional[str] = typer.Option(None, "--env", hidden=True),
) -> None:
    """Train the scene-graph network on a labelled dataset, optionally aligning it to unlabelled
    target images through gradient reversal (Sim2SG section 4.2). The Sim2SG loop (Algorithm 1)
    is `sim2sg loop`."""
    if env is not None:
        fail("--env: the Sim2SG loop moved to its own command: `sim2sg loop --env ENV --target IMAGES "
             "--out RUN ...` (same options; `sim2sg loop --help`)")
    if source is None:
        fail("--source DATASET is required (the Sim2SG loop is `sim2sg loop --env ENV --target IMAGES`)")
    out_dir(out)
    with user_errors():
        from sim2sg.train import distributed
        from sim2sg.train.align import parse_align
        from sim2sg.train.config import TrainConfig
        from sim2sg.train.fit import fit

        parse_align(align, loop=False)
        device = distributed.init_from_env(device)  # under torchrun: join the process group (docs/distributed.md)
        cfg = TrainConfig(
            source=str(source), out=str(out), target=str(target) if target else None, val=str(val) if val else None,
            align=align, arch=model.value, backbone=backbone.value, weights=str(weights) if weights else None,
            epochs=epochs, steps=steps, batch_size=batch, lr=lr, optimizer=optimizer.value,
            grl_weight=grl_weight, grl_ramp=grl_ramp.value, grl_bound=grl_bound, align_warmup_steps=align_warmup,
            augment=augment, device=device, seed=seed, workers=workers, checkpoint_every=checkpoint_every,
            image_every=image_every, amp=not no_amp, deterministic=deterministic, compile=compile_, progress=progress,
            model=overrides(model_set),
        )
        main = distributed.is_main()
        try:
            path = fit(cfg, resume=resume, log=info if main else (lambda _: None), given=given_settings(ctx))
        finally:
            distributed.shutdown()
        if main:
            info(f"wrote {path}")


def overrides(model_set: list[str]) -> dict:
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


def parse_size(text: str) -> tuple[int, int]:
    return common.parse_size(text)


def predict_cmd(
    images: Path = typer.Argument(..., help="Folder of png/jpg images."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="RUN/checkpoint.pt written by `sim2sg train` or `sim2sg loop`."),
    out: Path = typer.Option(..., "--out", help="Output folder: <stem>.json graphs, <stem>.png drawings, predictions.json."),
    score_thresh: float = typer.Option(0.5, "--score-thresh", min=0.0, max=1.0, help="Keep objects scoring at least this."),
    rel_thresh: float = typer.Option(0.5, "--rel-thresh", min=0.0, max=1.0, help="Keep predicates scoring at least this."),
    device: str = typer.Option("auto", "--device"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace another run's predictions found in OUT (graphs "
                                   "of images not in IMAGES): deletes the files its predictions.json lists."),
) -> None:
    """Predict one scene graph per image (2D boxes, relations; 3D fields are placeholders marked
    attributes.lifted = false) and draw it. Images it cannot predict (unreadable, too elongated for
    the network, or whose outputs would replace another image's) are named, one error line each,
    and the rest are still predicted (exit status 2). A re-run into OUT replaces the earlier run's
    files; one with other images is refused unless --overwrite."""
    out_dir(out)
    if out.resolve() == images.resolve():
        fail(f"--out {out}: is the image folder, whose images the drawings (<stem>.png) would replace: "
             "name another folder")
    with user_errors():
        from sim2sg.train.predict import kept_summary, predict_images

        result = predict_images(checkpoint, images, out, device=device, score_thresh=score_thresh, rel_thresh=rel_thresh,
                                overwrite=overwrite)
    for err in result.failed:  # the readable images are predicted all the same (as graph2usd and render do)
        typer.echo(f"error: {err}", err=True)
    info(f"wrote {plural(len(result.written), 'scene graph')} to {out}: "
         + kept_summary(json.loads((out / "predictions.json").read_text()), score_thresh))
    if result.failed:
        fail(f"{len(result.failed)} of {plural(len(result.written) + len(result.failed), 'image')} not predicted")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("predict")(predict_cmd)
