"""Relation (predicate) head in the spirit of Graph R-CNN (Yang et al., ECCV 2018).

Candidate ordered pairs (subject i, object j) of boxes in one image are scored from
- the subject's and the object's ROI features (the detector's box head, `obj_dim` wide),
- the ROI features of their union box (a separate two-layer head, `hidden` wide),
- a spatial encoding of the two boxes (`spatial_encoding`, 15 numbers),
optionally refined by rounds of message passing between object nodes and relation nodes.

Predicates are **multi-label**: a CLEVR pair is often `left` AND `front` of another. The head
outputs one logit per predicate (P logits, no softmax), trained with one binary cross-entropy per
predicate; a pair with no relation has an all-zero target ("background"). At inference
`predicate_scores` turns the logits into P+1 scores: index 0 (background) is the probability that
no predicate holds, prod_p (1 - sigmoid(l_p)), treating predicates as independent; index p >= 1 is
sigmoid(l_p). These scores are *not* a softmax distribution (they need not sum to 1): several
predicates can be near 1 at once, which is exactly what multi-label ground truth asks for.

Boxes are [x1, y1, x2, y2] pixels in the frame of the (transformed) image the features come from.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SPATIAL_DIM = 15


def all_pairs(n: int, device: torch.device | str | None = None) -> Tensor:
    """(n * (n - 1), 2) long: every ordered pair (i, j), i != j, in row-major order of (i, j)."""
    if n < 2:
        return torch.zeros(0, 2, dtype=torch.long, device=device)
    # arithmetic instead of a boolean mask: no host sync on GPU
    m = torch.arange(n * (n - 1), device=device)
    i = torch.div(m, n - 1, rounding_mode="floor")
    j = m % (n - 1)
    j = j + (j >= i).long()
    return torch.stack([i, j], dim=1)


def union_boxes(bs: Tensor, bo: Tensor) -> Tensor:
    """(M, 4) union of (M, 4) subject and (M, 4) object boxes (xyxy)."""
    return torch.cat([torch.minimum(bs[:, :2], bo[:, :2]), torch.maximum(bs[:, 2:], bo[:, 2:])], dim=1)


def spatial_encoding(bs: Tensor, bo: Tensor, image_size: tuple[int, int]) -> Tensor:
    """(M, 15) float encoding of (M, 4) subject boxes `bs` and object boxes `bo` in an image of
    `image_size` = (H, W) pixels.

    Columns: subject box / (W, H, W, H) (4), object box likewise (4); the object relative to the
    subject as (dx / w_s, dy / h_s, log(w_o / w_s), log(h_o / h_s)) (4), with dx, dy the centre
    offsets; IoU (1); centre offsets (dx / W, dy / H) (2). Sign conventions matter: dx > 0 means the
    object lies to the right of the subject in the image.
    """
    h, w = float(image_size[0]), float(image_size[1])
    bs = bs.float()
    bo = bo.float()
    scale = bs.new_tensor([w, h, w, h])
    ws = (bs[:, 2] - bs[:, 0]).clamp(min=1.0)
    hs = (bs[:, 3] - bs[:, 1]).clamp(min=1.0)
    wo = (bo[:, 2] - bo[:, 0]).clamp(min=1.0)
    ho = (bo[:, 3] - bo[:, 1]).clamp(min=1.0)
    dx = 0.5 * (bo[:, 0] + bo[:, 2] - bs[:, 0] - bs[:, 2])
    dy = 0.5 * (bo[:, 1] + bo[:, 3] - bs[:, 1] - bs[:, 3])
    # elementwise IoU (box_iou would build an M x M matrix)
    inter_w = (torch.minimum(bs[:, 2], bo[:, 2]) - torch.maximum(bs[:, 0], bo[:, 0])).clamp(min=0)
    inter_h = (torch.minimum(bs[:, 3], bo[:, 3]) - torch.maximum(bs[:, 1], bo[:, 1])).clamp(min=0)
    inter = inter_w * inter_h
    area_s = (bs[:, 2] - bs[:, 0]) * (bs[:, 3] - bs[:, 1])
    area_o = (bo[:, 2] - bo[:, 0]) * (bo[:, 3] - bo[:, 1])
    iou = inter / (area_s + area_o - inter).clamp(min=1e-6)
    return torch.cat([
        bs / scale, bo / scale,
        torch.stack([dx / ws, dy / hs, torch.log(wo / ws), torch.log(ho / hs), iou, dx / w, dy / h], dim=1),
    ], dim=1)


def relation_targets(num_boxes: int, relations: Tensor, num_predicates: int) -> tuple[Tensor, Tensor]:
    """All ordered pairs of `num_boxes` boxes and their multi-label targets.

    relations: (R, 3) long rows (subject index, object index, predicate id >= 1).
    Returns pairs (M, 2) long, M = n (n - 1), and targets (M, P) float in {0, 1}; target[m, p - 1]
    = 1 when (pairs[m], p) is a ground-truth triplet. Duplicated triplets count once.
    """
    device = relations.device
    pairs = all_pairs(num_boxes, device)
    targets = torch.zeros(len(pairs), num_predicates, device=device)
    if len(relations):
        s, o, p = relations[:, 0], relations[:, 1], relations[:, 2]
        ok = (s != o) & (s >= 0) & (o >= 0) & (s < num_boxes) & (o < num_boxes) & (p >= 1) & (p <= num_predicates)
        # invalid rows are clamped into range and add 0: no boolean indexing, so no host sync on GPU
        s, o = s.clamp(0, max(num_boxes - 1, 0)), o.clamp(0, max(num_boxes - 1, 0))
        p = p.clamp(1, num_predicates)
        # row of (s, o) in all_pairs' row-major order without the diagonal
        row = (s * (num_boxes - 1) + o - (o > s).long()).clamp(0, max(len(pairs) - 1, 0))
        if len(pairs):
            targets.index_put_((row, p - 1), ok.float(), accumulate=True)
            targets.clamp_(max=1.0)
    return pairs, targets


def predicate_scores(logits: Tensor) -> Tensor:
    """(M, P) logits -> (M, P + 1) scores [background, predicate 1..P] (see module docstring)."""
    p = torch.sigmoid(logits.float())
    bg = torch.prod(1.0 - p, dim=1, keepdim=True)
    return torch.cat([bg, p], dim=1)


class RelationHead(nn.Module):
    """Scores ordered pairs from object features, union-box features and box geometry.

    in_channels * roi_size**2: size of one pooled union-box ROI (FPN: 256 * 7 * 7);
    obj_dim: width of the object features (the detector's box head); hidden: relation node width;
    message_passing: rounds of object <-> relation updates (0 = none).
    """

    def __init__(self, in_channels: int, roi_size: int, obj_dim: int, num_predicates: int,
                 hidden: int = 256, message_passing: int = 1):
        super().__init__()
        self.union_head = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * roi_size * roi_size, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.spatial = nn.Sequential(nn.Linear(SPATIAL_DIM, 64), nn.ReLU(inplace=True),
                                     nn.Linear(64, 64), nn.ReLU(inplace=True))
        self.pair = nn.Sequential(nn.Linear(2 * obj_dim + hidden + 64, hidden), nn.ReLU(inplace=True))
        self.rounds = nn.ModuleList(_MessagePassing(obj_dim, hidden) for _ in range(message_passing))
        self.classifier = nn.Linear(hidden, num_predicates)

    def forward(self, obj_feats: Tensor, pairs: Tensor, union_roi: Tensor, spatial: Tensor) -> Tensor:
        """obj_feats (N, obj_dim) for all boxes of the batch; pairs (M, 2) long indices into them;
        union_roi (M, C, r, r) pooled union-box features; spatial (M, 15). Returns (M, P) logits."""
        s, o = pairs[:, 0], pairs[:, 1]
        sp = self.spatial(spatial.to(obj_feats.dtype))
        rel = self.pair(torch.cat([obj_feats[s], obj_feats[o], self.union_head(union_roi), sp], dim=1))
        obj = obj_feats
        for mp in self.rounds:
            obj, rel = mp(obj, rel, s, o)
        return self.classifier(rel)


class _MessagePassing(nn.Module):
    """One round: relation nodes hear their subject and object; object nodes hear the mean of the
    relations they are subject of and, separately, object of (Graph R-CNN's typed edges).
    Residual updates, so zero messages leave the features unchanged."""

    def __init__(self, obj_dim: int, hidden: int):
        super().__init__()
        self.rel_from_subj = nn.Linear(obj_dim, hidden)
        self.rel_from_obj = nn.Linear(obj_dim, hidden, bias=False)
        self.obj_from_as_subj = nn.Linear(hidden, obj_dim)
        self.obj_from_as_obj = nn.Linear(hidden, obj_dim, bias=False)

    def forward(self, obj: Tensor, rel: Tensor, s: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
        new_rel = rel + torch.relu(self.rel_from_subj(obj[s]) + self.rel_from_obj(obj[o]))
        msg = _scatter_mean(self.obj_from_as_subj(rel), s, len(obj)) + _scatter_mean(self.obj_from_as_obj(rel), o, len(obj))
        new_obj = obj + torch.relu(msg)
        return new_obj, new_rel


def _scatter_mean(x: Tensor, index: Tensor, n: int) -> Tensor:
    """(n, D) mean of rows of (M, D) `x` grouped by (M,) `index`; zeros for empty groups."""
    out = x.new_zeros(n, x.shape[1]).index_add_(0, index, x)
    # index_add_ rather than bincount, which syncs with the host on GPU
    count = x.new_zeros(n).index_add_(0, index, x.new_ones(len(index))).clamp(min=1)
    return out / count[:, None]
