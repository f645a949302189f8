"""`build_model`: the network a `ModelConfig` names (`arch`), the one place that picks it."""

from __future__ import annotations

from torch import nn

from sim2sg.model.fast import SceneGraphCenterNet
from sim2sg.model.sgg import ModelConfig, SceneGraphRCNN

ARCHS = ("frcnn", "fast")  # Faster R-CNN (paper-faithful) | one-stage centre detector, batched


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised network for `cfg` (draws from torch's default generator: call it
    inside `sim2sg.train.rng.TorchRNG.scope`)."""
    if cfg.arch == "frcnn":
        return SceneGraphRCNN(cfg)
    if cfg.arch == "fast":
        return SceneGraphCenterNet(cfg)
    raise ValueError(f"unknown model {cfg.arch!r} (choose from {', '.join(ARCHS)})")
