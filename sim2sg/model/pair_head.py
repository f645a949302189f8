"""Relation head over padded object sets: every ordered pair of N objects per image at once.

Each object is a feature vector (read off the dense feature map at its centre) and a box. A pair
(i, j) is scored from the subject's and the object's features and from the boxes' geometry
(`relation_head.spatial_encoding`, 15 numbers), by an MLP whose first layer is split by input, so
the (B, N, N, hidden) pair tensor is one broadcast sum of (B, N, 1, hidden) + (B, 1, N, hidden) +
(B, N, N, hidden) terms instead of a concatenation of N^2 feature copies.

Predicates are multi-label as in `relation_head` (one sigmoid per predicate, all-zero target for
"no relation"); `relation_head.predicate_scores` turns logits into [background, predicates].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sim2sg.model.relation_head import SPATIAL_DIM, spatial_encoding


class PairRelationHead(nn.Module):
    """(B, N, in_dim) object features + (B, N, 4) boxes -> (B, N, N, P) predicate logits for the
    ordered pairs (subject i, object j); the diagonal is computed but meaningless (mask it)."""

    def __init__(self, in_dim: int, num_predicates: int, hidden: int = 256):
        super().__init__()
        self.subj = nn.Linear(in_dim, hidden)
        self.obj = nn.Linear(in_dim, hidden, bias=False)
        self.spatial = nn.Sequential(nn.Linear(SPATIAL_DIM, 64), nn.ReLU(inplace=True), nn.Linear(64, hidden, bias=False))
        self.out = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_predicates))

    def forward(self, feats: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        b, n, _ = feats.shape
        bs = boxes[:, :, None, :].expand(b, n, n, 4).reshape(-1, 4)
        bo = boxes[:, None, :, :].expand(b, n, n, 4).reshape(-1, 4)
        sp = spatial_encoding(bs, bo, image_size).to(feats.dtype)
        x = self.subj(feats)[:, :, None] + self.obj(feats)[:, None, :] + self.spatial(sp).reshape(b, n, n, -1)
        return self.out(x)


def dense_relation_targets(relations: Tensor, n: int, num_predicates: int) -> Tensor:
    """(B, R, 3) padded relation rows (subject, object, predicate >= 1; -1 rows = padding) ->
    (B, N, N, P) float multi-label targets, N = n; rows out of range are ignored, duplicates count
    once. Arithmetic indices and a masked add: no boolean indexing, no host sync."""
    b, r, _ = relations.shape
    s, o, p = relations[..., 0], relations[..., 1], relations[..., 2]
    ok = (s >= 0) & (o >= 0) & (s < n) & (o < n) & (s != o) & (p >= 1) & (p <= num_predicates)
    batch = torch.arange(b, device=relations.device)[:, None].expand(b, r)
    flat = ((batch * n + s.clamp(0, n - 1)) * n + o.clamp(0, n - 1)) * num_predicates + (p.clamp(1, num_predicates) - 1)
    out = torch.zeros(b * n * n * num_predicates, device=relations.device)
    out.index_put_((flat.reshape(-1),), ok.reshape(-1).float(), accumulate=True)
    return out.clamp_(max=1.0).reshape(b, n, n, num_predicates)


def pair_mask(valid: Tensor) -> Tensor:
    """(B, N) object mask -> (B, N, N) mask of the ordered pairs of two distinct valid objects."""
    n = valid.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=valid.device)
    return valid[:, :, None] & valid[:, None, :] & ~eye


def relation_loss(logits: Tensor, targets: Tensor, mask: Tensor, bg_weight: float) -> Tensor:
    """Multi-label BCE over the masked pairs: logits and targets (B, N, N, P), mask (B, N, N).
    Mean over predicates per pair; pairs with no relation weigh `bg_weight`, the others 1;
    weighted mean over pairs (0 with a graph when no pair is valid). Every pair of ground-truth
    objects counts (no sampling: the padded set is small), so the loss draws no random numbers."""
    per_pair = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(-1)
    w = torch.where(targets.sum(-1) > 0, 1.0, bg_weight) * mask.float()
    return (per_pair * w).sum() / w.sum().clamp(min=1e-6)
