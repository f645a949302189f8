"""Box overlap under sim2sg's one box convention.

Boxes are ``[x1, y1, x2, y2]`` in pixels, continuous coordinates (docs/formats.md): width is
``x2 - x1``, area is ``(x2 - x1) * (y2 - y1)``, **no +1**. This is the convention of COCO,
pycocotools, KITTI and torchvision; the neural-motifs / Scene-Graph-Benchmark evaluators add +1,
which we deliberately do not, so that detection AP (pycocotools) and triplet recall agree on
what a box is.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes `a` (N, 4) and `b` (M, 4), ``[x1, y1, x2, y2]`` pixels, no +1.

    Returns (N, M) float64. A pair whose union is empty (two degenerate boxes) has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou
