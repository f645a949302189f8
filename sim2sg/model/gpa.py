"""GPA: graph-induced prototype alignment (Xu et al., "Cross-domain Detection via Graph-induced
Prototype Alignment", CVPR 2020), a feature-alignment baseline of the paper's Table 3.

For each domain, at two levels of Faster R-CNN - the RPN level (pooled ROI features, 2 classes:
background / object) and the R-CNN level (box-head features, C + 1 classes) - GPA

1. builds a graph over each image's proposals whose adjacency is their pairwise IoU
   (`iou_adjacency`; 1 on the diagonal), and aggregates each proposal's class-weighted
   features and class weights over its neighbours (`class_prototypes`);
2. forms one prototype per class: the sum of the aggregated p_k-weighted features over the
   batch divided by the sum of the aggregated weights p_k (p_k: the predicted probability of
   class k, so target proposals need no labels);
3. pulls the source and target prototypes of each class together (intra-class loss: mean over
   classes of the mean squared difference) and pushes prototypes of different classes apart,
   within and across domains (inter-class loss: a contrastive hinge with margin m = 1 on the
   root-mean-square distance d, each term ((m - d) / m)^2 max(0, m - d)^2), `prototype_losses`.

The features first go through a linear adaptation layer of their own (GPA's: 128 wide at the
RPN level, 64 at the R-CNN level), `GPAHead`. The losses are minimised directly (no gradient
reversal), each level with weight 1 (the authors' defaults `--da_weight 1 --rpn_da_weight 1`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MARGIN = 1.0  # GPA's inter-class margin


class GPAHead(nn.Module):
    """GPA's adaptation layers: `rpn` maps flattened pooled ROI features (N, roi_dim) to (N, 128),
    `rcnn` maps box-head features (N, box_dim) to (N, 64)."""

    def __init__(self, roi_dim: int, box_dim: int, rpn_dim: int = 128, rcnn_dim: int = 64):
        super().__init__()
        self.rpn = nn.Linear(roi_dim, rpn_dim)
        self.rcnn = nn.Linear(box_dim, rcnn_dim)
        for m in (self.rpn, self.rcnn):  # GPA's initialisation: N(0, 0.01), zero bias
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def iou_adjacency(boxes: Tensor) -> Tensor:
    """(N, 4) boxes [x1, y1, x2, y2] -> (N, N) IoU matrix (the proposal graph's adjacency; a box of
    zero area has IoU 0 with everything but itself, whose entry is 1)."""
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area[:, None] + area[None, :] - inter
    iou = inter / union.clamp(min=1e-6)
    return iou.fill_diagonal_(1.0)


def class_prototypes(feats: Tensor, probs: Tensor, boxes: list[Tensor], eps: float = 1e-6) -> Tensor:
    """Graph-induced prototypes of one domain.

    feats: (N, D) features of all proposals of the batch, image by image; probs: (N, K) class
    probabilities; boxes: per image (N_i, 4) proposal boxes, sum N_i = N. Returns (K, D): for
    class k, sum_i (A_i (p_k * f))  /  sum_i (A_i p_k), A_i the IoU adjacency of image i.
    """
    num, den, start = feats.new_zeros(probs.shape[1], feats.shape[1]), probs.new_zeros(probs.shape[1]), 0
    for b in boxes:
        n = len(b)
        if n == 0:
            continue
        # summed over the image's rows, A (p_k * f) = c^T (p_k * f) with c = 1^T A (A symmetric)
        c = iou_adjacency(b.float()).sum(0).to(feats.dtype)
        w = c[:, None] * probs[start:start + n]  # (n, K)
        num = num + w.T @ feats[start:start + n]
        den = den + w.sum(0)
        start += n
    return num / (den[:, None] + eps)


def prototype_losses(src: Tensor, tgt: Tensor, margin: float = MARGIN) -> tuple[Tensor, Tensor]:
    """(intra, inter) for (K, D) source and target prototypes.

    intra = mean_k dist(src_k, tgt_k); inter = sum over class pairs i < j of the four pairs
    (src_i, src_j), (tgt_i, tgt_j), (src_i, tgt_j), (tgt_i, src_j) of ((m - d) / m)^2 *
    max(0, m - d)^2 with d = sqrt(dist), divided by 2 K (K - 1); dist = mean squared difference.
    """
    k = src.shape[0]
    intra = ((src - tgt) ** 2).mean(1).mean()
    if k < 2:
        return intra, src.sum() * 0.0
    i, j = torch.triu_indices(k, k, 1, device=src.device)
    inter = src.new_zeros(())
    for a, b in ((src[i], src[j]), (tgt[i], tgt[j]), (src[i], tgt[j]), (tgt[i], src[j])):
        d = ((a - b) ** 2).mean(1).clamp(min=1e-12).sqrt()
        inter = inter + (((margin - d) / margin) ** 2 * (margin - d).clamp(min=0) ** 2).sum()
    return intra, inter / (2 * k * (k - 1))
