"""Training as plain functions (torchvision references/detection and nanoGPT style).

    cfg = TrainConfig(source="data/clevr_train", target="data/clevr_real/images", align="both", out="runs/a")
    fit(cfg)                      # writes runs/a/checkpoint.pt, runs/a/tb/, runs/a/config.json
    fit(cfg, resume=True)         # continues from runs/a/checkpoint.pt after a kill

Exact resume: the batch of optimizer step s is a pure function of (seed, s) (`batch_indices`), and
a checkpoint holds model, optimizer, step and every RNG state (torch, CUDA, numpy, Python), so a
run killed and resumed from its last checkpoint ends with the same weights as an unbroken run
(bit-for-bit on CPU; on CUDA up to the nondeterminism of some kernels, e.g. ROI align backward).

Losses: the detector's (RPN objectness + box, ROI classification + box), the relation head's
multi-label BCE, and when aligning, D^a's (eq. 3, `loss_domain_image`) and D^c's (eq. 4,
`loss_domain_pred`) behind gradient reversal with weight lambda = `grl_schedule(step, ...)`.
During the first `align_warmup_steps` steps lambda = 0 and target images are not used at all.

`grl_bound` > 0 bounds what the GRLs may do to the network, tensor by tensor (`bounded_backward`):
under Adam, lambda alone does not (see that function).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from sim2sg import atomic
from sim2sg.errors import InputError
from sim2sg.model import ALIGN_MODES, BACKBONES, ModelConfig, build_model, grl_schedule
from sim2sg.train.augment import MODES as AUGMENT_MODES
from sim2sg.train.augment import augment_images
from sim2sg.train.data import ImageFolder, LabelledDataset, collate

CHECKPOINT_FORMAT = "sim2sg-checkpoint"
CHECKPOINT_VERSION = 1
DOMAIN_LOSSES = ("loss_domain_image", "loss_domain_pred")
DOMAIN_HEADS = ("domain_image", "domain_objects", "domain_predicates")  # SceneGraphRCNN's classifiers


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Paths are strings so the config is a plain JSON-able dict (`asdict`).

    steps: total optimizer steps; None means `epochs` passes over the source data (an epoch is
    len(source) // batch_size steps). lr: peak learning rate after `lr_warmup_steps` linear warm-up,
    then cosine decay to `min_lr_ratio * lr`. grl_weight / grl_ramp ("fixed" | "dann") /
    align_warmup_steps: the GRL schedule (`sim2sg.model.grl_schedule`); domain_loss_weight scales
    both domain losses. grl_bound: 0 sums every gradient and clips them together (the paper's
    way); > 0 scales, per network tensor, the gradient arriving through the GRLs down to at most
    grl_bound x the labelled losses' gradient on that tensor, and clips the domain classifiers
    apart from the network (`bounded_backward`). augment: "none" or "photometric"
    (`sim2sg.train.augment`: colour, blur and noise on the labelled images only; seeded by
    (seed, step)). amp: bf16 autocast on CUDA (ignored on CPU). deterministic:
    `torch.use_deterministic_algorithms(True, warn_only=True)` on CUDA too (on the CPU always;
    `make_reproducible`). model: overrides of
    `ModelConfig` fields (e.g. {"rpn_post_nms_train": 300}).
    """

    source: str
    out: str
    target: str | None = None
    val: str | None = None
    align: str = "none"
    backbone: str = "resnet18"
    weights: str | None = None
    epochs: int = 10
    steps: int | None = None
    batch_size: int = 8
    target_batch_size: int | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    lr_warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 10.0
    augment: str = "none"
    grl_weight: float = 0.1
    grl_ramp: str = "fixed"
    grl_bound: float = 0.0
    align_warmup_steps: int = 0
    domain_loss_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    deterministic: bool = False
    workers: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    image_every: int = 500
    tensorboard: bool = True
    progress: bool = True
    model: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise `InputError` for values no run can use."""
        def bad(name, msg):
            raise InputError("training config", name, msg)
        if self.align not in ALIGN_MODES:
            bad("align", f"expected one of {', '.join(ALIGN_MODES)}, got {self.align!r}")
        if self.align != "none" and not self.target:
            bad("target", f"--align {self.align} needs unlabelled target images (--target FOLDER)")
        if self.backbone not in BACKBONES:
            bad("backbone", f"expected one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.optimizer not in ("adamw", "sgd"):
            bad("optimizer", f"expected adamw or sgd, got {self.optimizer!r}")
        if self.augment not in AUGMENT_MODES:
            bad("augment", f"expected one of {', '.join(AUGMENT_MODES)}, got {self.augment!r}")
        if self.grl_ramp not in ("fixed", "dann"):
            bad("grl_ramp", f"expected fixed or dann, got {self.grl_ramp!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            bad("steps", f"must be >= 1, got {self.steps}")
        if not self.lr > 0:
            bad("lr", f"must be positive, got {self.lr}")
        if not self.grl_bound >= 0:
            bad("grl_bound", f"must be >= 0 (0: off), got {self.grl_bound}")
        defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)
                    if f.name not in ("num_classes", "num_predicates", "image_size", "backbone")}
        for k, v in self.model.items():
            if k not in defaults:
                bad(f"model.{k}", f"unknown model setting (known: {', '.join(sorted(defaults))})")
            d = defaults[k]
            ok = (isinstance(v, (list, tuple)) if isinstance(d, tuple)
                  else isinstance(v, (int, float)) and not isinstance(v, bool) if isinstance(d, float)
                  else isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            if not ok:
                bad(f"model.{k}", f"expected a value like {d!r}, got {v!r}")

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in names})


# ---- small pieces -------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available else cpu; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError("--device", "", f"unknown device {name!r} (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "", "CUDA requested but not available on this machine")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_reproducible(device: torch.device, deterministic: bool = False) -> None:
    """Deterministic algorithms (`torch.use_deterministic_algorithms(True, warn_only=True)`)
    when asked, and always on the CPU: there, with 2+ threads, some default kernel accumulates in
    a thread-dependent order, and identical 12-step trainings ended with most weights different
    (bit-identical with 1 thread, or with this switch, at no measurable cost). On CUDA it stays
    opt-in (`deterministic`): deterministic kernels there are slower and some only warn. Without
    it, one loop row trained twice from the same state on the H100 differed by up to 0.01 mAP
    (benchmarks/RESULTS.md, tenth session)."""
    if deterministic and device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; it reads this when its handle is
        # made, so it must be set before the first matrix product (a user's own value wins).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic or device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def batch_indices(n: int, batch: int, step: int, seed: int, stream: int) -> list[int]:
    """Dataset indices of the batch of optimizer step `step` (0-based) for a dataset of `n` items.

    Each epoch of len = max(1, n // batch) steps is a fresh permutation drawn from a generator
    seeded by (seed, stream, epoch); a trailing partial batch is dropped (BatchNorm dislikes tiny
    batches), and n < batch gives the whole dataset each step. `stream` separates source (0) and
    target (1) orders. Pure function: the data order needs no state in checkpoints.
    """
    spe = max(1, n // batch)
    epoch, k = divmod(step, spe)
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream, epoch]).generate_state(1)[0]))
    perm = torch.randperm(n, generator=g)
    return perm[k * batch:(k + 1) * batch].tolist()


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of steps [start, stop) as given by `batch_indices` (a DataLoader batch_sampler)."""

    def __init__(self, n: int, batch: int, seed: int, stream: int, start: int, stop: int):
        self.n, self.batch, self.seed, self.stream, self.start, self.stop = n, batch, seed, stream, start, stop

    def __iter__(self):
        for s in range(self.start, self.stop):
            yield batch_indices(self.n, self.batch, s, self.seed, self.stream)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up over `lr_warmup_steps`, then cosine from lr to min_lr_ratio * lr."""
    if step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    span = max(1, total_steps - cfg.lr_warmup_steps)
    t = min(1.0, (step - cfg.lr_warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and normalisation parameters (1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    if targets is not None:
        targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


# ---- checkpoints ---------------------------------------------------------------------------------
def rng_state() -> dict:
    """All RNG states as tensors / plain values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": [py[0], list(py[1]), py[2]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(path: str | Path, model, optimizer, step: int, epoch: int, cfg: TrainConfig,
                    meta: dict) -> None:
    """Write a plain-dict checkpoint atomically (a kill mid-write leaves the previous one).

    Keys: format, version, model, optimizer, scaler (empty: bf16 autocast needs no loss scaling),
    step (optimizer steps done), epoch, rng, config (TrainConfig as dict), model_config (ModelConfig
    as dict), meta (categories, predicates, env, image_size).
    """
    ckpt = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {},
        "step": int(step), "epoch": int(epoch), "rng": rng_state(),
        "config": dataclasses.asdict(cfg), "model_config": dataclasses.asdict(model.cfg), "meta": meta,
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic.write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint dict read with `weights_only=True`; `InputError` if it is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "", "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and unpickler errors all mean "not a usable checkpoint"
        raise InputError(path, "", f"not a readable sim2sg checkpoint ({type(e).__name__}; expected a file "
                                   "written by `sim2sg train`)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, "format", f"not a sim2sg checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise InputError(path, "version", f"unsupported checkpoint version {ckpt.get('version')!r}")
    for k in ("model", "model_config", "meta"):
        if k not in ckpt:
            raise InputError(path, k, "missing")
    return ckpt


def model_from_checkpoint(ckpt: dict, device="cpu"):
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device)


def load_weights(model: torch.nn.Module, path: str | Path) -> int:
    """Load user-supplied weights into `model`: a sim2sg checkpoint, a state dict of this model,
    or a torchvision ResNet state dict (goes into the backbone body; `fc.*` is ignored). Tensors
    whose name and shape match are loaded, the rest keep their initialisation. Returns the number
    of tensors loaded; raises `InputError` when nothing matches."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "", "weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, "", f"not a readable weights file ({type(e).__name__})") from None
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise InputError(path, "", "expected a state dict")
    own = model.state_dict()
    matched = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        for name in (k, f"detector.backbone.body.{k}", k.removeprefix("module.")):
            if name in own and own[name].shape == v.shape:
                matched[name] = v
                break
    if not matched:
        raise InputError(path, "", "no tensor matches this model (names or shapes differ)")
    model.load_state_dict(matched, strict=False)
    return len(matched)


# ---- one step, one epoch --------------------------------------------------------------------------
def train_step(model, optimizer, batch, cfg: TrainConfig, step: int, total_steps: int, device) -> dict[str, float]:
    """One optimizer step on `batch` = (source images, targets, target images or None).
    Returns {loss name: value, "loss": total, "lr": .., "grl_lambda": ..}."""
    images, targets, target_images = batch
    lr = lr_at(step, cfg, total_steps)
    for g in optimizer.param_groups:
        g["lr"] = lr
    lam = grl_schedule(step, total_steps, cfg.grl_weight, cfg.align_warmup_steps, cfg.grl_ramp) if cfg.align != "none" else 0.0
    use_target = target_images is not None and lam > 0.0
    images, targets = to_device(images, targets, device)
    images = augment_images(images, cfg.augment, (cfg.seed, step))
    if use_target:
        target_images, _ = to_device(target_images, None, device)
    amp = cfg.amp and device.type == "cuda"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        losses = model(images, targets, target_images if use_target else None, cfg.align, lam)
    total = sum((cfg.domain_loss_weight if k in DOMAIN_LOSSES else 1.0) * v for k, v in losses.items())
    if not torch.isfinite(total):
        raise FloatingPointError(f"loss is {total.item()} at step {step}: {({k: v.item() for k, v in losses.items()})}; "
                                 "try a lower --lr")
    optimizer.zero_grad(set_to_none=True)
    domain = [cfg.domain_loss_weight * v for k, v in losses.items() if k in DOMAIN_LOSSES]
    out = {k: v.item() for k, v in losses.items()}
    if cfg.grl_bound > 0 and domain:
        labelled = sum(v for k, v in losses.items() if k not in DOMAIN_LOSSES)
        out["grl_scale"] = bounded_backward(model, labelled, sum(domain), cfg.grl_bound, cfg.grad_clip)
    else:
        total.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    out.update(loss=total.item(), lr=lr, grl_lambda=lam)
    return out


def domain_head_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(network parameters, domain-classifier parameters), those that require gradients."""
    net, heads = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (heads if name.split(".")[0] in DOMAIN_HEADS else net).append(p)
    return net, heads


def bounded_backward(model: torch.nn.Module, labelled: torch.Tensor, domain: torch.Tensor, bound: float,
                     clip: float) -> float:
    """Fill `.grad` for one aligned step with the adversarial gradient bounded tensor by tensor.

    For each network tensor W, with g_l the gradient of the `labelled` losses and g_d the gradient
    the `domain` losses send back through the GRLs: grad W = g_l + s g_d, s = min(1, bound ||g_l|| /
    ||g_d||). The network is clipped to norm `clip` (as without alignment) and the domain
    classifiers (their own, unreversed gradients) apart, to `clip` too; clip <= 0: no clipping.
    Returns the mean s over the network tensors that get a GRL gradient.

    Why: Adam divides each element's step by that element's own gradient scale, so wherever g_d
    dominates g_l - the FPN levels the labelled losses barely use - the GRL term moves W at the
    full learning rate whatever lambda is, and rewrites features the detector's heads share.
    Bounded, the GRL term stays a perturbation of the labelled step on every tensor. And with the
    classifiers clipped apart, their gradients (tens of times the network's) no longer shrink
    the network's labelled step through one global clip. Costs a second backward pass.
    """
    net, heads = domain_head_parameters(model)
    g_l = torch.autograd.grad(labelled, net, retain_graph=True, allow_unused=True)
    domain.backward()
    scales = []
    with torch.no_grad():
        for p, gl in zip(net, g_l):
            gd = p.grad
            if gl is None:
                # only the GRLs reach this tensor: bound ||g_l|| = 0, so it gets no gradient
                p.grad = None
                continue
            if gd is None:
                p.grad = gl
                continue
            s = (bound * gl.float().norm() / gd.float().norm().clamp(min=1e-30)).clamp(max=1.0)
            p.grad = gl + gd * s.to(gd.dtype)
            scales.append(s)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(net, clip)
            torch.nn.utils.clip_grad_norm_(heads, clip)
    return float(torch.stack(scales).mean()) if scales else 1.0


def train_one_epoch(model, optimizer, source_loader, target_loader, cfg: TrainConfig, *, first_step: int,
                    total_steps: int, device, epoch: int, checkpoint_fn=None, writer=None, image_fn=None,
                    pbar=None) -> tuple[int, dict[str, float]]:
    """Run the steps that `source_loader` yields (its batch sampler covers steps first_step,
    first_step + 1, ...), pairing each with the next `target_loader` batch when there is one.

    checkpoint_fn(step, epoch) is called every `cfg.checkpoint_every` steps and after the last one;
    image_fn(step) every `cfg.image_every` steps. Returns (next step, mean of each logged value).
    """
    model.train()
    sums, count = defaultdict(float), 0
    step = first_step
    target_iter = iter(target_loader) if target_loader is not None else None
    for images, targets in source_loader:
        target_images = next(target_iter)[0] if target_iter is not None else None
        logs = train_step(model, optimizer, (images, targets, target_images), cfg, step, total_steps, device)
        step += 1
        count += 1
        for k, v in logs.items():
            sums[k] += v
        if writer is not None and (step % cfg.log_every == 0 or step == total_steps):
            for k, v in logs.items():
                tag = f"loss/{k}" if k.startswith("loss") else f"train/{k}"
                writer.add_scalar(tag, v, step)
        if pbar is not None:
            pbar.update(1)
            pbar.set_postfix(epoch=epoch, loss=f"{logs['loss']:.3f}", rel=f"{logs.get('loss_relation', 0):.3f}",
                             lam=f"{logs['grl_lambda']:.2f}", refresh=False)
        if checkpoint_fn is not None and (step % cfg.checkpoint_every == 0 or step == total_steps):
            checkpoint_fn(step, epoch)
        if image_fn is not None and cfg.image_every > 0 and step % cfg.image_every == 0:
            image_fn(step)
            model.train()
    return step, {k: v / max(1, count) for k, v in sums.items()}


@torch.no_grad()
def predict(model, images: list[torch.Tensor], device, amp: bool = True) -> list[dict]:
    """Eval-mode outputs for (3, H, W) images in [0, 1], moved to the CPU as float tensors."""
    model.eval()
    images = [im.to(device) for im in images]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        outs = model(images)
    return [{k: (v.float() if v.is_floating_point() else v).cpu() for k, v in o.items()} for o in outs]


def outputs_to_record(out: dict, categories, digits: int = 5) -> dict:
    """One model output -> a predictions-JSON image record's objects and relations (formats.md)."""
    objects = [{"box": [round(float(v), 3) for v in b], "category": categories[int(c) - 1], "score": round(float(s), digits)}
               for b, c, s in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist())]
    relations = [{"subject": int(p[0]), "object": int(p[1]), "scores": [round(float(x), digits) for x in s]}
                 for p, s in zip(out["rel_pairs"].tolist(), out["rel_scores"].tolist())]
    return {"objects": objects, "relations": relations}


def evaluate(model, dataset: LabelledDataset, device, batch_size: int = 8, amp: bool = True,
             categories=None, predicates=None) -> dict:
    """Predictions of `model` on a labelled dataset in the predictions format (formats.md), plus
    metrics from `sim2sg.eval` when that package is installed: returns {"predictions": dict,
    "metrics": dict | None}. Names default to the dataset's own vocabulary."""
    categories = list(categories or dataset.info.categories)
    predicates = list(predicates or dataset.info.predicates)
    records = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        outs = predict(model, [im for im, _ in items], device, amp)
        for (_, t), o, k in zip(items, outs, range(start, start + len(items))):
            records.append({"image_id": t["image_id"], "file_name": dataset.images[k]["file_name"],
                            **outputs_to_record(o, categories)})
    preds = {"format": "sim2sg-predictions", "version": 1,
             "predicate_names": ["__background__", *predicates], "images": records}
    metrics = None
    try:
        from sim2sg.eval import evaluate as eval_metrics
        from sim2sg.eval import load_ground_truth
    except ImportError:
        eval_metrics = None
    if eval_metrics is not None:
        metrics = eval_metrics(load_ground_truth(dataset.root), preds)
    return {"predictions": preds, "metrics": metrics}


# ---- fit ------------------------------------------------------------------------------------------
def fit(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train per `cfg`; returns the path of the final checkpoint (`cfg.out/checkpoint.pt`).

    resume=True continues from `cfg.out/checkpoint.pt` (the config stored there wins for
    everything that shapes the run; `out`, `device`, `workers`, `progress` may change).
    Writes `config.json`, TensorBoard logs under `tb/`, and, when `cfg.val` is given,
    `val_predictions.json` (+ `val_metrics.json` when `sim2sg.eval` is present) at the end.
    """
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    ckpt = None
    if resume:
        if not ckpt_path.is_file():
            raise InputError(ckpt_path, "", "nothing to resume: checkpoint not found (drop --resume to start)")
        ckpt = load_checkpoint(ckpt_path)
        stored = TrainConfig.from_dict(ckpt["config"])
        cfg = dataclasses.replace(stored, out=cfg.out, device=cfg.device, workers=cfg.workers, progress=cfg.progress)
    cfg.validate()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    make_reproducible(device, cfg.deterministic)

    source = LabelledDataset(cfg.source)
    info = source.info
    if not info.predicates:
        raise InputError(Path(cfg.source) / "labels.json", "predicate_categories", "no predicates: nothing for the relation head to learn")
    target = ImageFolder(cfg.target, size=info.image_size) if (cfg.target and cfg.align != "none") else None
    meta = {"categories": list(info.categories), "predicates": list(info.predicates), "env": info.env,
            "image_size": list(info.image_size)}

    mcfg = ModelConfig.from_dict(dict(num_classes=len(info.categories), num_predicates=len(info.predicates),
                                      image_size=info.image_size, backbone=cfg.backbone, **cfg.model))
    model = build_model(mcfg).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    optimizer = make_optimizer(model, cfg)

    spe = max(1, len(source) // cfg.batch_size)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * spe
    step = 0
    if ckpt is not None:
        if ckpt["meta"].get("categories") != meta["categories"] or ckpt["meta"].get("predicates") != meta["predicates"]:
            raise InputError(ckpt_path, "meta", "the checkpoint was trained on other categories/predicates than --source")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        set_rng_state(ckpt["rng"])
    elif cfg.weights:
        load_weights(model, cfg.weights)
    del ckpt

    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    writer = None
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"), purge_step=step if step else None)

    def checkpoint_fn(s, e):
        save_checkpoint(ckpt_path, model, optimizer, s, e, cfg, meta)

    image_fn = None
    if writer is not None and cfg.image_every > 0:
        def image_fn(s):
            log_images(writer, model, source, target, device, s, meta, amp=cfg.amp)

    pbar = None
    if cfg.progress:
        from tqdm import tqdm
        pbar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)
    tb = cfg.target_batch_size or cfg.batch_size
    t0, s0 = time.perf_counter(), step
    pin = device.type == "cuda"
    try:
        while step < total:
            epoch = step // spe
            stop = min(total, (epoch + 1) * spe)
            src_loader = DataLoader(source, batch_sampler=StepBatchSampler(len(source), cfg.batch_size, cfg.seed, 0, step, stop),
                                    collate_fn=collate, num_workers=cfg.workers, pin_memory=pin)
            tgt_loader = None
            if target is not None:
                tgt_loader = DataLoader(target, batch_sampler=StepBatchSampler(len(target), tb, cfg.seed, 1, step, stop),
                                        collate_fn=collate, num_workers=cfg.workers, pin_memory=pin)
            step, means = train_one_epoch(model, optimizer, src_loader, tgt_loader, cfg, first_step=step, total_steps=total,
                                          device=device, epoch=epoch, checkpoint_fn=checkpoint_fn, writer=writer,
                                          image_fn=image_fn, pbar=pbar)
            if writer is not None:
                for k, v in means.items():
                    if k.startswith("loss"):
                        writer.add_scalar(f"epoch/{k}", v, step)
    finally:
        if pbar is not None:
            pbar.close()
        if writer is not None:
            writer.flush()
    if step == s0 and not ckpt_path.is_file():
        checkpoint_fn(step, step // spe)
    elapsed = time.perf_counter() - t0
    if writer is not None and step > s0:
        writer.add_scalar("train/images_per_s", (step - s0) * cfg.batch_size / max(elapsed, 1e-9), step)
    if cfg.val:
        val = LabelledDataset(cfg.val)
        res = evaluate(model, val, device, cfg.batch_size, cfg.amp, meta["categories"], meta["predicates"])
        atomic.write_text(out / "val_predictions.json", json.dumps(res["predictions"]) + "\n")
        if res["metrics"] is not None:
            from sim2sg.eval import write_metrics
            write_metrics(out / "val_metrics.json", res["metrics"])
            if writer is not None:
                det = (res["metrics"].get("detection") or {}).get("mAP@0.5")
                if det is not None:
                    writer.add_scalar("val/mAP50", det, step)
    if writer is not None:
        writer.close()
    return ckpt_path


def log_images(writer, model, source, target, device, step: int, meta: dict, n: int = 4, amp: bool = True) -> None:
    """TensorBoard grids of predictions drawn on the first `n` source and target images. Eval-mode
    forward: no RNG draws and no BatchNorm updates, so logging does not perturb training."""
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
