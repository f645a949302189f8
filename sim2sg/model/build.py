"""`build_model`: the network a `ModelConfig` names (`arch`), the one place that picks it."""

from __future__ import annotations

from torch import nn

from sim2sg.errors import InputError
from sim2sg.model.config import BACKBONES, ModelConfig
from sim2sg.model.fast import FAST_BACKBONES, SceneGraphCenterNet
from sim2sg.model.sgg import SceneGraphRCNN

ARCHS = ("frcnn", "fast")  # Faster R-CNN (paper-faithful) | one-stage centre detector, batched
# the bodies each network can be built on: Faster R-CNN takes torchvision's ResNets
# (resnet_fpn_backbone), the fast network also the light BasicBlock bodies (`fast.LIGHT_BODIES`)
BACKBONES_OF = {"frcnn": BACKBONES, "fast": FAST_BACKBONES}


def check_backbone(arch: str, backbone: str, source: str) -> None:
    """`InputError(source, "backbone", ...)` when network `arch` cannot be built on `backbone`
    (`arch` itself is checked by the caller)."""
    known = BACKBONES_OF.get(arch, FAST_BACKBONES)
    if backbone in known:
        return
    if backbone in FAST_BACKBONES:
        raise InputError(source, "backbone", f"{backbone} is a body of the fast network only (--model fast); "
                                             f"{arch} takes one of {', '.join(known)}")
    raise InputError(source, "backbone", f"expected one of {', '.join(known)}, got {backbone!r}")


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised network for `cfg` (draws from torch's default generator: call it
    inside `sim2sg.train.rng.TorchRNG.scope`)."""
    if cfg.arch == "frcnn":
        return SceneGraphRCNN(cfg)
    if cfg.arch == "fast":
        return SceneGraphCenterNet(cfg)
    raise ValueError(f"unknown model {cfg.arch!r} (choose from {', '.join(ARCHS)})")
