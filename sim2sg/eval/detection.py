"""Detection AP@0.5 per class and its mean, computed by pycocotools (COCO-style, 101-point).

Settings: one IoU threshold 0.5 (a detection matches at IoU >= 0.5), one area range (all boxes),
``maxDets`` = the largest number of detections in any image (at least 100), so no detection is
cut. Boxes are ``[x1, y1, x2, y2]`` pixels and go to COCO as ``[x1, y1, x2 - x1, y2 - y1]``;
pycocotools' IoU has no +1, like the rest of sim2sg.

Ignored GT objects (COCO ``iscrowd``, or outside a KITTI difficulty) become pycocotools
``iscrowd = 1`` objects, which is how pycocotools ignores: a detection matched to one is neither
true nor false positive. Unlike stock pycocotools we match them with plain IoU, not the crowd
rule ``intersection / detection area``, so a small false detection inside a large ignored box
still counts as a false positive (as in KITTI). An ignored object can absorb several detections
(pycocotools' crowd rule; KITTI absorbs one).

A class without any non-ignored GT object has AP None (pycocotools reports -1) and is left out of
the mean; images without detections simply contribute misses.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


class _PlainIoUEval(COCOeval):
    """COCOeval that matches ignored (crowd) GT boxes by plain IoU (see module docstring)."""

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if not gt and not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: self.params.maxDets[-1]]
        return mask_utils.iou([d["bbox"] for d in dt], [g["bbox"] for g in gt], [0] * len(gt))


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _coco(images, categories, annotations) -> COCO:
    c = COCO()
    c.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        c.createIndex()
    return c


def detection_ap(gt_images, preds, categories: dict[int, str], iou_threshold: float = 0.5) -> dict:
    """AP at `iou_threshold` per class and the mean over classes with GT.

    `gt_images` and `preds` are aligned sequences of `ImageGT` and `AlignedPrediction`.
    Returns ``{"mAP@0.5": float | None, "AP@0.5": {name: float | None}, "num_gt": {name: int},
    "num_detections": int}`` (keys use the threshold given).
    """
    tag = f"@{iou_threshold:g}"
    cat_list = [{"id": int(c), "name": n} for c, n in sorted(categories.items())]
    images, gts, dts = [], [], []
    num_gt = {n: 0 for n in categories.values()}
    max_dets = 100
    for idx, (g, p) in enumerate(zip(gt_images, preds, strict=True)):
        images.append({"id": idx})  # our own ids: GT ids may be anything
        for box, lab, ign in zip(g.boxes, g.labels, g.ignore):
            xywh = _xywh(box)
            gts.append({"id": len(gts) + 1, "image_id": idx, "category_id": int(lab), "bbox": xywh,
                        "area": xywh[2] * xywh[3], "iscrowd": int(ign)})
            num_gt[categories[int(lab)]] += int(not ign)
        for box, lab, score in zip(p.boxes, p.labels, p.scores):
            xywh = _xywh(box)
            dts.append({"id": len(dts) + 1, "image_id": idx, "category_id": int(lab), "bbox": xywh,
                        "area": xywh[2] * xywh[3], "score": float(score), "iscrowd": 0})
        max_dets = max(max_dets, len(p.boxes))

    ap = {n: None for n in categories.values()}
    if images:
        ev = _PlainIoUEval(_coco(images, cat_list, gts), _coco(images, cat_list, dts), iouType="bbox")
        ev.params.iouThrs = np.array([iou_threshold])
        ev.params.maxDets = [max_dets]
        ev.params.areaRng = [[0.0, float("inf")]]
        ev.params.areaRngLbl = ["all"]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        precision = ev.eval["precision"]  # (T=1, R=101, K=classes, A=1, M=1); -1 where no GT
        for k, cid in enumerate(ev.params.catIds):
            pr = precision[0, :, k, 0, -1]
            if np.all(pr > -1):
                ap[categories[int(cid)]] = float(pr.mean())
    present = [v for v in ap.values() if v is not None]
    return {
        f"mAP{tag}": float(np.mean(present)) if present else None,
        f"AP{tag}": ap,
        "num_gt": num_gt,
        "num_detections": len(dts),
    }
