"""`TrainConfig`: one plain training run (`sim2sg train`), a small frozen dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from sim2sg.errors import InputError
from sim2sg.model import ARCHS, ModelConfig, check_backbone
from sim2sg.model.config import INT_MAX, INT_MAX_OTHER, ZERO_OK
from sim2sg.train.align import frcnn_only, parse_align
from sim2sg.train.augment import MODES as AUGMENT_MODES


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
    `make_reproducible`). arch: the network, "frcnn" (Faster R-CNN, the paper's) or "fast"
    (`sim2sg.model.fast`); `--model` on the command line. model: overrides of
    `ModelConfig` fields (e.g. {"rpn_post_nms_train": 300}). compile: torch.compile the fast
    network's dense pass (`SceneGraphCenterNet.compile_dense`; arch "fast" only). Like `device`,
    it changes how a run computes, not what it is: checkpoints are the same either way and a
    resumed run may change it (results agree to rounding, not to the bit).
    """

    source: str
    out: str
    target: str | None = None
    val: str | None = None
    align: str = "none"
    arch: str = "frcnn"
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
    compile: bool = False
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
        frcnn_only(parse_align(self.align, loop=False, source="training config"), self.arch, "training config")
        if self.align != "none" and not self.target:
            bad("target", f"--align {self.align} needs unlabelled target images (--target FOLDER)")
        check_shared(self, bad)
        if self.optimizer not in ("adamw", "sgd"):
            bad("optimizer", f"expected adamw or sgd, got {self.optimizer!r}")
        for name in ("epochs", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            bad("steps", f"must be >= 1, got {self.steps}")

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in names})



def check_shared(cfg, bad) -> None:
    """The checks of the training fields that `TrainConfig` and `LoopConfig` share (arch, backbone,
    augment, grl_ramp, grl_bound, lr, batch_size, compile, model overrides): `bad(field, message)` raises
    the caller's `InputError`, which names its source (a config file or a CLI option)."""
    if cfg.arch not in ARCHS:
        bad("arch", f"expected one of {', '.join(ARCHS)}, got {cfg.arch!r}")
    try:
        check_backbone(cfg.arch, cfg.backbone, "")
    except InputError as e:  # the message, under the caller's source
        bad("backbone", e.message)
    if cfg.augment not in AUGMENT_MODES:
        bad("augment", f"expected one of {', '.join(AUGMENT_MODES)}, got {cfg.augment!r}")
    if cfg.grl_ramp not in ("fixed", "dann"):
        bad("grl_ramp", f"expected fixed or dann, got {cfg.grl_ramp!r}")
    if cfg.batch_size < 1:
        bad("batch_size", f"must be >= 1, got {cfg.batch_size}")
    if not 0 < cfg.lr < math.inf:  # inf passes typer's min=0 and trains NaN weights
        bad("lr", f"must be positive and finite, got {cfg.lr}")
    if not 0 <= cfg.grl_bound < math.inf:
        bad("grl_bound", f"must be >= 0 (0: off) and finite, got {cfg.grl_bound}")
    if not 0 <= cfg.grl_weight < math.inf:
        bad("grl_weight", f"must be >= 0 and finite, got {cfg.grl_weight}")
    if cfg.compile and cfg.arch == "frcnn":
        # Faster R-CNN's per-image proposal, sampling and ROI steps break the graph at every
        # image and change shape every step: compiled, it would recompile without speeding up.
        bad("compile", "torch.compile applies to the fast network only (--model fast); Faster R-CNN's "
                       "per-image heads do not compile usefully")
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)
                if f.name not in ("num_classes", "num_predicates", "image_size", "arch", "backbone")}
    for k, v in cfg.model.items():
        if k not in defaults:
            bad(f"model.{k}", f"unknown model setting (known: {', '.join(sorted(defaults))})")
        d = defaults[k]
        if isinstance(d, int) and not isinstance(d, bool):  # a flag is no count
            lo, hi = 0 if k in ZERO_OK else 1, INT_MAX.get(k, INT_MAX_OTHER)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                bad(f"model.{k}", f"expected an integer in [{lo}, {hi}], got {v!r}")
            continue
        if isinstance(d, tuple):
            _check_tuple(k, v, d, bad)
            continue
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            bad(f"model.{k}", f"expected a value like {d!r}, got {v!r}")


def _check_tuple(k: str, v, d: tuple, bad) -> None:
    """A list-valued model setting: as many numbers as its default (one anchor size per FPN level,
    one mean and std per RGB channel), anchor sizes positive integers (px), stds positive.
    `align_heads` is the trainer's record of --align gpa/sapnet, not a setting."""
    if k == "align_heads":
        bad(f"model.{k}", "is set by --align (gpa, sapnet), not by --set")
    num = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
              for x in v) if isinstance(v, (list, tuple)) else False
    if not num or len(v) != len(d):
        bad(f"model.{k}", f"expected {len(d)} numbers like {list(d)}, got {v!r}")
    if k == "anchor_sizes" and not all(isinstance(x, int) and x > 0 for x in v):
        bad(f"model.{k}", f"expected positive integers (pixels), got {v!r}")
    if k == "image_std" and not all(x > 0 for x in v):
        bad(f"model.{k}", f"expected positive numbers (an image is divided by them), got {v!r}")
