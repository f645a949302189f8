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
               score_thresh: float = 0.5, rel_thresh: float = 0.5, max_relations: int = 12) -> np.ndarray:
    """A copy of RGB uint8 `image` (H, W, 3) with kept boxes (category, score) and up to
    `max_relations` triplets drawn as arrows from subject centre to object centre, and the triplet
    list written in the top-left corner. `categories` / `predicates` are names for ids 1..;
    predicate id p is predicates[p - 1]."""
    img = np.ascontiguousarray(image.copy())
    h, w = img.shape[:2]
    scale = max(0.3, min(h, w) / 400)
    thick = max(1, int(round(min(h, w) / 250)))
    keep, triplets = select_graph(pred, score_thresh, rel_thresh)
    boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(pred["labels"]).reshape(-1)
    scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
    for i in keep:
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        c = _color(int(labels[i]))
        cv2.rectangle(img, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), c, thick)
        name = categories[int(labels[i]) - 1] if 0 < int(labels[i]) <= len(categories) else str(int(labels[i]))
        cv2.putText(img, f"{i}:{name} {scores[i]:.2f}", (x1, max(8, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, c, 1, cv2.LINE_AA)
    lines = []
    for s, p, o in triplets[:max_relations]:
        cs = ((boxes[s, :2] + boxes[s, 2:]) / 2).astype(int)
        co = ((boxes[o, :2] + boxes[o, 2:]) / 2).astype(int)
        cv2.arrowedLine(img, tuple(int(v) for v in cs), tuple(int(v) for v in co), (255, 255, 255), 1, cv2.LINE_AA, tipLength=0.08)
        pname = predicates[p - 1] if 0 < p <= len(predicates) else str(p)
        lines.append(f"{s} {pname} {o}")
    for k, text in enumerate(lines):
        y = int((k + 1) * 14 * scale / 0.4)
        if y >= h:
            break
        cv2.putText(img, text, (2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(img, text, (2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img
