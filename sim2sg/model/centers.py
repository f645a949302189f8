"""Dense one-stage detection by object centres (CenterNet, Zhou et al. 2019), batched with static
shapes: padded ground truth, heatmap targets, the losses, and peak decoding.

Frames and units: images are (B, 3, H, W); the dense outputs live on an (h, w) grid of stride
(sy, sx) = (H / h, W / w) pixels (4 for the fast network). Boxes are [x1, y1, x2, y2] pixels of
the input image. An object is encoded at the grid cell holding its box centre: a class heatmap
with an elliptical Gaussian around that cell (TTFNet's box-shaped Gaussian, peak exactly 1 at the
cell), the sub-cell offset of the centre (in cells, [0, 1)) and the log of the box size in cells.
Labels are 1-based (0 = padding).

Nothing here syncs with the host or depends on the data for its shapes: ground truth is padded to
`max_objects` objects and `max_relations` relations per image, with masks, so a training step has
the same shapes every time (torch.compile / CUDA graphs apply).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pad_targets(targets: list[dict], max_objects: int, max_relations: int, device) -> dict[str, Tensor]:
    """Per-image target dicts -> padded batch tensors (one `pad_sequence` per field, no host sync).

    Returns boxes (B, N, 4) float px, labels (B, N) long (0 = padding), valid (B, N) bool,
    relations (B, R, 3) long (subject, object, predicate >= 1; rows of -1 = padding), with
    N = max_objects, R = max_relations. Objects beyond N and relations beyond R are dropped
    (relations that refer to a dropped object are ignored by `dense_relation_targets`).
    """
    from torch.nn.utils.rnn import pad_sequence

    boxes = pad_sequence([t["boxes"].to(device, torch.float32).reshape(-1, 4) for t in targets], batch_first=True)
    labels = pad_sequence([t["labels"].to(device, torch.long).reshape(-1) for t in targets], batch_first=True)
    rels = pad_sequence([t["relations"].to(device, torch.long).reshape(-1, 3) for t in targets], batch_first=True,
                        padding_value=-1)
    boxes = _fit(boxes, 1, max_objects, 0.0)
    labels = _fit(labels, 1, max_objects, 0)
    rels = _fit(rels, 1, max_relations, -1)
    return {"boxes": boxes, "labels": labels, "valid": labels > 0, "relations": rels}


def _fit(x: Tensor, dim: int, size: int, value) -> Tensor:
    """Truncate or pad `x` along `dim` (1) to `size` with `value` (shape arithmetic only)."""
    n = x.shape[dim]
    if n >= size:
        return x.narrow(dim, 0, size)
    pad = [0, 0] * (x.ndim - dim - 1) + [0, size - n]
    return F.pad(x, pad, value=value)


def center_targets(boxes: Tensor, labels: Tensor, valid: Tensor, num_classes: int, grid: tuple[int, int],
                   stride: tuple[float, float], sigma_scale: float = 0.54) -> dict[str, Tensor]:
    """Dense targets for padded ground truth (see `pad_targets`).

    boxes (B, N, 4) px, labels (B, N) 1-based, valid (B, N) bool; grid (h, w) cells of stride
    (sy, sx) px. Returns heatmap (B, C, h, w) float in [0, 1] (max over objects of the class of an
    elliptical Gaussian, sigma = sigma_scale * box size / 6 per axis, peak 1 at the centre cell),
    index (B, N) long flat cell index h_i * w + w_i of each centre, offset (B, N, 2) sub-cell
    (x, y) offset in cells, log_size (B, N, 2) log of (width, height) in cells.
    """
    h, w = grid
    sy, sx = stride
    b, n = labels.shape
    cx = (boxes[..., 0] + boxes[..., 2]) * (0.5 / sx)
    cy = (boxes[..., 1] + boxes[..., 3]) * (0.5 / sy)
    ix = cx.floor().clamp(0, w - 1)
    iy = cy.floor().clamp(0, h - 1)
    bw = ((boxes[..., 2] - boxes[..., 0]) / sx).clamp(min=1e-2)
    bh = ((boxes[..., 3] - boxes[..., 1]) / sy).clamp(min=1e-2)
    # Gaussians over the whole grid at once: (B, N, h * w); padded objects contribute 0
    sig_x = (sigma_scale * bw / 6).clamp(min=0.3)
    sig_y = (sigma_scale * bh / 6).clamp(min=0.3)
    xs = torch.arange(w, device=boxes.device, dtype=torch.float32)
    ys = torch.arange(h, device=boxes.device, dtype=torch.float32)
    gx = torch.exp(-((xs[None, None, :] - ix[..., None]) ** 2) / (2 * sig_x[..., None] ** 2))  # (B, N, w)
    gy = torch.exp(-((ys[None, None, :] - iy[..., None]) ** 2) / (2 * sig_y[..., None] ** 2))  # (B, N, h)
    g = (gy[..., :, None] * gx[..., None, :]).reshape(b, n, h * w) * valid[..., None]
    cls = (labels - 1).clamp(min=0)[..., None].expand(b, n, h * w)
    heat = torch.zeros(b, num_classes, h * w, device=boxes.device).scatter_reduce_(1, cls, g, "amax")
    return {
        "heatmap": heat.reshape(b, num_classes, h, w),
        "index": (iy * w + ix).long(),
        "offset": torch.stack([cx - ix, cy - iy], dim=-1),
        "log_size": torch.stack([bw.log(), bh.log()], dim=-1),
    }


def focal_loss(logits: Tensor, heatmap: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced pixel focal loss. logits (B, C, h, w), heatmap targets of that
    shape; positives are the cells where the target is exactly 1 (object centres). Sum over
    cells / number of positives (at least 1). Computed in float32 from logits (log-sigmoid),
    so it never takes log(0)."""
    x = logits.float()
    p = torch.sigmoid(x)
    pos = (heatmap >= 1.0).float()
    pos_term = F.logsigmoid(x) * (1 - p) ** alpha * pos
    neg_term = F.logsigmoid(-x) * p ** alpha * (1 - heatmap) ** beta * (1 - pos)
    return -(pos_term.sum() + neg_term.sum()) / pos.sum().clamp(min=1.0)


def gather_cells(dense: Tensor, index: Tensor) -> Tensor:
    """Values of dense (B, K, h, w) at flat cell indices (B, N) -> (B, N, K)."""
    b, k = dense.shape[:2]
    flat = dense.reshape(b, k, -1)
    return flat.gather(2, index[:, None, :].expand(b, k, index.shape[1])).transpose(1, 2)


def regression_loss(offset: Tensor, log_size: Tensor, targets: dict[str, Tensor], valid: Tensor) -> Tensor:
    """L1 of the predicted sub-cell offset and log size at the ground-truth centre cells.
    offset, log_size: dense (B, 2, h, w); targets from `center_targets`; valid (B, N). Mean over
    the valid objects' 4 numbers (0 with a graph when there are none)."""
    idx = targets["index"]
    pred = torch.cat([gather_cells(offset, idx), gather_cells(log_size, idx)], dim=-1).float()  # (B, N, 4)
    tgt = torch.cat([targets["offset"], targets["log_size"]], dim=-1)
    m = valid[..., None].float()
    return (F.l1_loss(pred, tgt, reduction="none") * m).sum() / (4 * m.sum()).clamp(min=1.0)


def peaks(heat: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The k highest local maxima (3x3) of class probabilities heat (B, C, h, w) over all classes
    and cells. Returns scores (B, k), classes (B, k) long 0-based, cells (B, k) long flat indices,
    sorted by decreasing score. A cell that is not a local maximum scores 0 (no NMS needed)."""
    b, c, h, w = heat.shape
    hmax = F.max_pool2d(heat, 3, stride=1, padding=1)
    keep = heat * (hmax == heat)
    scores, idx = keep.reshape(b, -1).topk(min(k, c * h * w), dim=1)
    return scores, torch.div(idx, h * w, rounding_mode="floor"), idx % (h * w)


def decode_boxes(cells: Tensor, offset: Tensor, log_size: Tensor, grid: tuple[int, int],
                 stride: tuple[float, float], image_size: tuple[int, int]) -> Tensor:
    """Boxes (B, K, 4) px (clipped to the image of `image_size` (H, W)) for flat cells (B, K) from
    the dense offset and log_size maps (B, 2, h, w)."""
    h, w = grid
    sy, sx = stride
    off = gather_cells(offset, cells).float()
    size = gather_cells(log_size, cells).float().clamp(max=8.0).exp()
    cx = ((cells % w).float() + off[..., 0]) * sx
    cy = (torch.div(cells, w, rounding_mode="floor").float() + off[..., 1]) * sy
    hw, hh = 0.5 * size[..., 0] * sx, 0.5 * size[..., 1] * sy
    H, W = image_size
    return torch.stack([(cx - hw).clamp(0, W), (cy - hh).clamp(0, H), (cx + hw).clamp(0, W), (cy + hh).clamp(0, H)],
                       dim=-1)
