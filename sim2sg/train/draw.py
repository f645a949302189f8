"""Drawing predicted scene graphs on images (OpenCV), for TensorBoard grids and `sim2sg predict`."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np


def _color(k: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.8, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def select_graph(pred: dict, score_thresh: float, rel_thresh: float) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Objects and triplets of one prediction that pass the thresholds.

    pred: numpy/tensor-like dict with "boxes" (D, 4), "labels" (D,), "scores" (D,), "rel_pairs"
    (M, 2), "rel_scores" (M, P + 1). Returns (kept detection indices, [(subject det index,
    predicate id >= 1, object det index)]): every predicate whose score >= rel_thresh between two
    kept objects is a triplet (multi-label: a pair can give several).
    """
    scores = np.asarray(pred["scores"], dtype=np.float64)
    keep = [int(i) for i in np.nonzero(scores >= score_thresh)[0]]
    kept = set(keep)
    triplets = []
    pairs = np.asarray(pred["rel_pairs"]).reshape(-1, 2)
    rs = np.asarray(pred["rel_scores"], dtype=np.float64)
    for (s, o), row in zip(pairs, rs):
        if int(s) in kept and int(o) in kept:
            for p in np.nonzero(row[1:] >= rel_thresh)[0]:
                triplets.append((int(s), int(p) + 1, int(o)))
    return keep, triplets


def draw_graph(image: np.ndarray, pred: dict, categories: list[str], predicates: list[str],
               score_thresh: float = 0.5, rel_thresh: float = 0.5, max_relations: int = 12,
               min_side: int = 384, panel: int = 240, max_side: int = 4096) -> np.ndarray:
    """A picture of one prediction: RGB uint8 `image` (H, W, 3) enlarged (nearest, by an integer
    factor) to at least `min_side` px on its short side (but no further than `max_side` px on its
    long side: a 2x2000 image would otherwise become gigabytes) with the kept boxes (id:category score),
    and beside it a white panel of `panel` px listing the `max_relations` best-scoring triplets
    ("0 cube left 2 sphere") and how many more there are, so the text stays legible on small
    images and never covers them. `categories` / `predicates` name ids 1..; predicate id p is
    predicates[p - 1]. Returns (H * f, W * f + panel, 3) uint8."""
    h, w = image.shape[:2]
    f = max(1, min(int(np.ceil(min_side / max(1, min(h, w)))), max_side // max(1, h, w)))
    img = np.ascontiguousarray(np.repeat(np.repeat(image, f, axis=0), f, axis=1))
    H, W = img.shape[:2]
    scale, thick = 0.45, 2
    keep, triplets = select_graph(pred, score_thresh, rel_thresh)
    boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4) * f
    labels = np.asarray(pred["labels"]).reshape(-1)
    scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)

    def name(i: int) -> str:
        c = int(labels[i])
        return categories[c - 1] if 0 < c <= len(categories) else str(c)

    for i in keep:
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        c = _color(int(labels[i]))
        cv2.rectangle(img, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), c, thick)
        label = f"{i}:{name(i)} {scores[i]:.2f}"
        org = (x1 + 2, max(12, y1 - 4))
        cv2.putText(img, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, c, 1, cv2.LINE_AA)
    # the best triplets first: score of the predicate on its pair
    pair_scores = {}
    pairs = np.asarray(pred["rel_pairs"]).reshape(-1, 2)
    rs = np.asarray(pred["rel_scores"], dtype=np.float64)
    for (s, o), row in zip(pairs, rs):
        pair_scores[(int(s), int(o))] = row
    ranked = sorted(triplets, key=lambda t: -pair_scores[(t[0], t[2])][t[1]])
    side = np.full((H, panel, 3), 255, np.uint8)
    lines = [f"{len(keep)} objects, {len(triplets)} relations", ""]
    for s, p, o in ranked[:max_relations]:
        pname = predicates[p - 1] if 0 < p <= len(predicates) else str(p)
        lines.append(f"{s} {name(s)} {pname} {o} {name(o)}")
    if len(ranked) > max_relations:
        lines.append(f"... {len(ranked) - max_relations} more")
    for k, text in enumerate(lines):
        y = 20 + 18 * k
        if y >= H - 4:
            break
        cv2.putText(side, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([img, side], axis=1)
