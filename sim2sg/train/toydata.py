"""A tiny synthetic sim2sg dataset drawn with OpenCV, for tests, benchmarks and smoke runs.

Each image shows 2..`max_objects` non-overlapping coloured shapes (categories "square", "disc",
"triangle") on a noisy grey background. Relations follow image-space centres, CLEVR style
("subject is <predicate> of object"): `left` when the subject's centre is more than `margin` px
left of the object's, `right` the reverse, `front` when it is more than `margin` px lower in the
image (closer to a camera looking down at a ground plane), `behind` the reverse. Most pairs hold
two predicates at once (e.g. left AND front), like CLEVR.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from sim2sg import atomic

CATEGORIES = ("square", "disc", "triangle")
PREDICATES = ("left", "right", "front", "behind")


def relations_from_boxes(boxes: np.ndarray, margin: float = 2.0) -> list[tuple[int, int, int]]:
    """(N, 4) xyxy boxes -> sorted [(subject, object, predicate id 1..4)] (PREDICATES order)."""
    c = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    out = []
    for i in range(len(boxes)):
        for j in range(len(boxes)):
            if i == j:
                continue
            dx, dy = c[j] - c[i]  # object minus subject
            if dx > margin:
                out.append((i, j, 1))  # subject left of object
            if dx < -margin:
                out.append((i, j, 2))
            if dy < -margin:
                out.append((i, j, 3))  # subject lower in the image: in front
            if dy > margin:
                out.append((i, j, 4))
    return sorted(out)


def draw_scene(rng: np.random.Generator, size: tuple[int, int], max_objects: int = 4,
               background: tuple[int, int, int] | None = None):
    """One image (H, W, 3) uint8 BGR, its boxes (N, 4) float xyxy pixels, labels (N,) 1-based and
    visible pixel counts (N,)."""
    h, w = size
    bg = np.array(background if background is not None else (110, 110, 110), dtype=np.float64)
    img = np.clip(bg + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    n = int(rng.integers(2, max_objects + 1))
    boxes, labels, areas = [], [], []
    smin, smax = max(6, min(h, w) // 8), max(8, min(h, w) // 4)
    for _ in range(200):
        if len(boxes) == n:
            break
        s = int(rng.integers(smin, smax + 1))
        x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        b = np.array([x0, y0, x0 + s, y0 + s], dtype=np.float64)
        if any(not (b[2] + 2 <= o[0] or o[2] + 2 <= b[0] or b[3] + 2 <= o[1] or o[3] + 2 <= b[1]) for o in boxes):
            continue
        cat = int(rng.integers(1, len(CATEGORIES) + 1))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        if cat == 1:
            cv2.rectangle(img, (x0, y0), (x0 + s - 1, y0 + s - 1), color, -1)
        elif cat == 2:
            cv2.circle(img, (x0 + s // 2, y0 + s // 2), s // 2, color, -1)
        else:
            pts = np.array([[x0 + s // 2, y0], [x0, y0 + s - 1], [x0 + s - 1, y0 + s - 1]], dtype=np.int32)
            cv2.fillPoly(img, [pts], color)
        # the tight box of the drawn pixels (what a renderer would label)
        mask = np.zeros((h, w), np.uint8)
        if cat == 1:
            mask[y0:y0 + s, x0:x0 + s] = 1
        elif cat == 2:
            cv2.circle(mask, (x0 + s // 2, y0 + s // 2), s // 2, 1, -1)
        else:
            cv2.fillPoly(mask, [pts], 1)
        ys, xs = np.nonzero(mask)
        boxes.append(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64))
        labels.append(cat)
        areas.append(int(len(xs)))
    return img, np.array(boxes).reshape(-1, 4), np.array(labels, dtype=np.int64), np.array(areas, dtype=np.int64)


def write_toy_dataset(out_dir: str | Path, n_images: int, rng: np.random.Generator,
                      size: tuple[int, int] = (64, 64), max_objects: int = 4, env: str = "toy",
                      background: tuple[int, int, int] | None = None) -> Path:
    """Write `n_images` images under `out_dir/images/` and `out_dir/labels.json` (formats.md).
    Returns `out_dir`. `background` (BGR) shifts the look, e.g. for a target domain."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, anns, rels = [], [], []
    for i in range(n_images):
        img, boxes, labels, areas = draw_scene(rng, size, max_objects, background)
        name = f"images/{i:06d}.png"
        cv2.imwrite(str(out_dir / name), img)
        images.append({"id": i, "file_name": name, "width": size[1], "height": size[0]})
        first = len(anns)
        for k, (b, c, area) in enumerate(zip(boxes, labels, areas)):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": first + k, "image_id": i, "category_id": int(c),
                         "bbox": [float(b[0]), float(b[1]), bw, bh], "area": int(area), "iscrowd": 0,
                         "instance_id": k + 1, "object_id": k, "visible_pixels": int(area),
                         "occlusion": 0.0, "truncation": 0.0})
        for s, o, p in relations_from_boxes(boxes):
            rels.append({"id": len(rels), "image_id": i, "subject_id": first + s, "object_id": first + o, "predicate_id": p})
    labels = {
        "info": {"format": "sim2sg-labels", "version": 1, "env": env},
        "images": images,
        "categories": [{"id": k + 1, "name": n, "supercategory": "object"} for k, n in enumerate(CATEGORIES)],
        "annotations": anns,
        "predicate_categories": [{"id": k + 1, "name": n} for k, n in enumerate(PREDICATES)],
        "relationships": rels,
    }
    atomic.write_text(out_dir / "labels.json", json.dumps(labels, indent=1) + "\n")
    return out_dir


def write_image_folder(out_dir: str | Path, n_images: int, rng: np.random.Generator,
                       size: tuple[int, int] = (64, 64), background: tuple[int, int, int] = (60, 90, 140)) -> Path:
    """Unlabelled images (a shifted-looking "target domain") as out_dir/NNNNNN.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        img = draw_scene(rng, size, 4, background)[0]
        cv2.imwrite(str(out_dir / f"{i:06d}.png"), img)
    return out_dir
