"""Domain classifiers for Sim2SG's two gradient reversal layers (paper section 4.2).

- D^a (`ImageDomainHead`, eq. 3, sigma_a): on the encoder features z = phi(x), every FPN level;
  1x1 conv -> ReLU -> 1x1 conv -> one logit per pixel, binary cross-entropy per pixel, as the
  image-level head of DA Faster R-CNN (Chen et al., CVPR 2018).
- D^c (`PredictionDomainHead`, eq. 4, sigma_c,pred): on the outputs h(z), one node at a time:
  object class distributions (C + 1 softmax probabilities) and predicate scores (P + 1, see
  `relation.predicate_scores`), each through its own small MLP -> one logit.

Domain labels follow eq. (3): d = 0 for synthetic (source) inputs, d = 1 for real (target) ones.
The GRL sits *before* each head (applied by the caller), so the heads learn to tell the domains
apart while the encoder and predictor learn to make them indistinguishable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sim2sg.model.grl import grad_reverse


class ImageDomainHead(nn.Module):
    """Per-pixel domain logits for feature maps of `in_channels` channels (shared by all levels)."""

    def __init__(self, in_channels: int = 256, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) features -> (B, 1, h, w) logits."""
        return self.net(x)


class PredictionDomainHead(nn.Module):
    """(N, in_dim) probability vectors -> (N,) domain logits."""

    def __init__(self, in_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


def image_domain_loss(head: ImageDomainHead, feats: Mapping[str, Tensor], domain: float, lambd: float) -> Tensor:
    """Eq. (3) for one domain: mean over FPN levels of the per-pixel BCE of D^a(GRL(z)) against
    label `domain` (0 source, 1 target), each level averaged over its pixels and images."""
    losses = []
    for f in feats.values():
        logits = head(grad_reverse(f, lambd)).float()
        losses.append(F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, domain)))
    return torch.stack(losses).mean()


def prediction_domain_loss(head: PredictionDomainHead, probs: Tensor, domain: float, lambd: float) -> Tensor:
    """Eq. (4) for one domain and one kind of node: mean BCE of D^c(GRL(h(z))) over the (N, K)
    probability vectors `probs` against label `domain`; 0 (with a graph) when N = 0."""
    if len(probs) == 0:
        return probs.sum() * 0.0
    logits = head(grad_reverse(probs.float(), lambd).to(head.net[0].weight.dtype)).float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, domain))


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module):
    """Context: BatchNorm layers of `module` still normalise with the batch's statistics in
    training mode, but do not move their running statistics (momentum 0 leaves them as they are)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield module
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
