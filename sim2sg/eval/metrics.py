"""All evaluation metrics of a predictions set against ground truth, as one JSON-ready dict.

`evaluate(gt, predictions)` matches predictions to GT images, then computes detection AP@0.5
(`sim2sg.eval.detection`) and triplet recall with and without graph constraint, each beside its
ceiling (`sim2sg.eval.recall`). IoU everywhere: continuous coordinates, no +1, match at >= 0.5.
Undefined values (a class without GT, no GT relations at all) are None (JSON null).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sim2sg import atomic
from sim2sg.errors import InputError
from sim2sg.eval.detection import detection_ap
from sim2sg.eval.groundtruth import (
    KITTI_DIFFICULTIES,
    GroundTruth,
    apply_kitti_difficulty,
)
from sim2sg.eval.predictions import AlignedPrediction, Predictions, parse_predictions
from sim2sg.eval.recall import DEFAULT_KS, perfect_prediction, recall_metrics

IOU_CONVENTION = "continuous pixel coordinates, no +1: area = (x2 - x1) * (y2 - y1); match at IoU >= 0.5"


def category_lookup(categories: dict[int, str]):
    """name -> the ground truth's category id (`categories`: id -> name), or None: the rule by which
    predictions' class names are scored (also `sim2sg.train.data.check_vocabulary`'s, before training)."""
    exact = {name: cid for cid, name in categories.items()}
    folded: dict[str, list[int]] = {}
    for cid, name in categories.items():
        folded.setdefault(name.lower(), []).append(cid)

    def lookup(name: str) -> int | None:
        # Exact first; a unique case-insensitive match lets "car" score against KITTI's "Car".
        if name in exact:
            return exact[name]
        ids = folded.get(name.lower(), [])
        return ids[0] if len(ids) == 1 else None

    return lookup


def _image_lookup(gt: GroundTruth):
    by_id = {im.image_id: k for k, im in enumerate(gt.images)}
    by_name = {im.file_name: k for k, im in enumerate(gt.images)}
    by_stem: dict[str, list[int]] = {}
    for k, im in enumerate(gt.images):
        by_stem.setdefault(Path(im.file_name).stem, []).append(k)

    def lookup(image_id, file_name) -> int | None:
        if image_id is not None:
            return by_id.get(image_id)
        if file_name in by_name:
            return by_name[file_name]
        # A predictor run on an image folder may know only "000123.png": match the stem if unique.
        ks = by_stem.get(Path(file_name).stem, [])
        return ks[0] if len(ks) == 1 else None

    return lookup


def align_predictions(gt: GroundTruth, predictions: Predictions) -> tuple[list[AlignedPrediction], int]:
    """Predictions of each GT image in GT vocabulary (class ids, predicate columns in GT predicate
    id order, background dropped). GT images without a predictions entry get an empty prediction.

    Returns ``(aligned, num_missing)``. Raises `InputError` (naming the predictions file and
    field) for an unknown image, an image listed twice, an unknown category or a predicate set
    that differs from the GT's.
    """
    src = predictions.source
    pids = sorted(gt.predicates)
    if gt.predicates:
        gt_names = {gt.predicates[p] for p in pids}
        names = predictions.predicate_names
        for j, n in enumerate(names[1:], start=1):
            if n not in gt_names:
                raise InputError(src, f"predicate_names[{j}]",
                                 f"unknown predicate {n!r}; the ground truth has {sorted(gt_names)}")
        missing = sorted(gt_names - set(names))
        if missing:
            raise InputError(src, "predicate_names", f"ground-truth predicates {missing} are missing")
        col = {n: j for j, n in enumerate(names)}
        columns = [col[gt.predicates[p]] for p in pids]  # file column of each GT predicate id
    else:
        columns = []  # no relations in this GT (e.g. KITTI): relation scores are not used

    category_of = category_lookup(gt.categories)
    image_of = _image_lookup(gt)
    aligned: list[AlignedPrediction | None] = [None] * len(gt.images)
    for i, im in enumerate(predictions.images):
        k = image_of(im.image_id, im.file_name)
        field = f"images[{i}]." + ("image_id" if im.image_id is not None else "file_name")
        if k is None:
            key = im.image_id if im.image_id is not None else repr(im.file_name)
            raise InputError(src, field, f"no ground-truth image {key}")
        if aligned[k] is not None:
            raise InputError(src, field, f"second entry for ground-truth image {gt.images[k].image_id}")
        labels = []
        for j, name in enumerate(im.categories):
            cid = category_of(name)
            if cid is None:
                known = sorted(gt.categories.values())
                raise InputError(src, f"images[{i}].objects[{j}].category",
                                 f"unknown category {name!r}; the ground truth has {known}")
            labels.append(cid)
        aligned[k] = AlignedPrediction(
            boxes=im.boxes,
            labels=np.asarray(labels, dtype=np.int64),
            scores=im.scores,
            pairs=im.pairs,
            rel_scores=im.rel_scores[:, columns],
        )
    missing_images = sum(a is None for a in aligned)
    empty = AlignedPrediction.empty(len(pids))
    return [a if a is not None else empty for a in aligned], missing_images


def evaluate(
    gt: GroundTruth,
    predictions: Predictions | dict,
    *,
    kitti_difficulty: str | None = None,
    ks=DEFAULT_KS,
    iou_threshold: float = 0.5,
    train_triplets: set[tuple[str, str, str]] | None = None,
) -> dict:
    """All metrics of `predictions` on `gt`, JSON-ready.

    Returns::

        {"num_images": int, "images_without_predictions": int, "iou_convention": str,
         "kitti_difficulty": str | None,
         "detection": {"mAP@0.5": .., "AP@0.5": {class: ..}, "num_gt": {class: int}, "num_detections": int},
         "relations": None | {"num_images": int, "num_triplets": int,
             "graph_constraint": {"R@20": .., "mR@20": .., ..., "per_predicate": {..}},
             "no_graph_constraint": {...same keys...},
             "ceiling": {"graph_constraint": {...}, "no_graph_constraint": {...}}}}

    `kitti_difficulty` ("easy", "moderate", "hard") needs KITTI GT: objects outside it are
    ignored, and detections lower than the difficulty's minimum height are dropped (KITTI's
    devkit ignores them too, so they can neither match nor be false positives).
    `train_triplets`: the training set's (subject class, predicate, object class) names
    (`training_triplets`); then each recall also has zero-shot recall zR@K over the GT triplets
    outside that set (`sim2sg.eval.recall`), and "relations" has "train_triplets": their number.
    """
    if isinstance(predictions, dict):
        predictions = parse_predictions(predictions)
    if kitti_difficulty is not None:
        gt = apply_kitti_difficulty(gt, kitti_difficulty)
    preds, missing = align_predictions(gt, predictions)
    if kitti_difficulty is not None:
        min_h = KITTI_DIFFICULTIES[kitti_difficulty][0]
        preds = [_keep_tall(p, min_h) for p in preds]

    pids = sorted(gt.predicates)
    relations = None
    with_rel = [g for g in gt.images if len(g.relations)]
    if with_rel and pids:
        perfect = [perfect_prediction(g, pids) for g in gt.images]
        seen = None
        if train_triplets is not None:  # names -> this GT's ids; classes the GT lacks cannot occur
            cat_id = {n: c for c, n in gt.categories.items()}
            pred_id = {n: p for p, n in gt.predicates.items()}
            seen = {(cat_id[s], pred_id[p], cat_id[o]) for s, p, o in train_triplets
                    if s in cat_id and o in cat_id and p in pred_id}

        def recall(p, graph_constraint):
            return recall_metrics(gt.images, p, gt.predicates, graph_constraint=graph_constraint, ks=ks,
                                  iou_threshold=iou_threshold, seen_triplets=seen)

        relations = {
            "num_images": len(with_rel),
            "num_triplets": int(sum(len(g.relations) for g in with_rel)),
            "graph_constraint": recall(preds, True),
            "no_graph_constraint": recall(preds, False),
            # Ceiling: the same code path on a perfect prediction (relations.perfect_prediction).
            "ceiling": {"graph_constraint": recall(perfect, True), "no_graph_constraint": recall(perfect, False)},
        }
        if train_triplets is not None:
            relations["train_triplets"] = len(train_triplets)
    return {
        "num_images": len(gt.images),
        "images_without_predictions": missing,
        "iou_convention": IOU_CONVENTION,
        "kitti_difficulty": kitti_difficulty,
        "detection": detection_ap(gt.images, preds, gt.categories, iou_threshold),
        "relations": relations,
    }


def training_triplets(gt: GroundTruth) -> set[tuple[str, str, str]]:
    """The (subject class, predicate, object class) names of every relation of `gt` (a training
    set, for zero-shot recall)."""
    return {(gt.categories[int(im.labels[s])], gt.predicates[int(p)], gt.categories[int(im.labels[o])])
            for im in gt.images for s, o, p in im.relations}


def _keep_tall(p: AlignedPrediction, min_height: float) -> AlignedPrediction:
    """Drop detections shorter than `min_height` px, with the relations that use them."""
    keep = (p.boxes[:, 3] - p.boxes[:, 1]) >= min_height
    if keep.all():
        return p
    new_index = np.cumsum(keep) - 1
    rel_keep = keep[p.pairs[:, 0]] & keep[p.pairs[:, 1]] if len(p.pairs) else np.zeros(0, bool)
    return AlignedPrediction(
        boxes=p.boxes[keep], labels=p.labels[keep], scores=p.scores[keep],
        pairs=new_index[p.pairs[rel_keep]].reshape(-1, 2), rel_scores=p.rel_scores[rel_keep],
    )


# ---- reporting ----------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def format_table(metrics: dict) -> str:
    """A plain-text table of `evaluate`'s result: detection AP per class, then each recall beside
    its ceiling and the fraction of the ceiling reached."""
    det = metrics["detection"]
    ap_key = next(k for k in det if k.startswith("mAP"))
    per_key = ap_key[1:]
    lines = [f"images: {metrics['num_images']} ({metrics['images_without_predictions']} without predictions)"]
    if metrics.get("kitti_difficulty"):
        lines.append(f"KITTI difficulty: {metrics['kitti_difficulty']}")
    width = max([len("class")] + [len(n) for n in det[per_key]])
    lines += ["", f"{'class':<{width}}  {per_key:>8}  {'GT':>6}"]
    for name, ap in det[per_key].items():
        lines.append(f"{name:<{width}}  {_fmt(ap):>8}  {det['num_gt'][name]:>6}")
    lines.append(f"{'mean':<{width}}  {_fmt(det[ap_key]):>8}")

    rel = metrics.get("relations")
    if rel is None:
        lines += ["", "relations: no ground-truth relations"]
        return "\n".join(lines)
    zs = rel["graph_constraint"].get("zero_shot_triplets")
    zero = f" ({zs} unseen in the {rel['train_triplets']} training triplets: zR@K)" if zs is not None else ""
    lines += ["", f"relations: {rel['num_triplets']} GT triplets in {rel['num_images']} images{zero}",
              f"{'metric':<10}  {'constraint':<10}  {'value':>8}  {'ceiling':>8}  {'of ceil':>8}"]
    for mode, label in (("graph_constraint", "graph"), ("no_graph_constraint", "no graph")):
        got, top = rel[mode], rel["ceiling"][mode]
        for key in [k for k in got if k[:2] == "R@"] + [k for k in got if k[:3] in ("mR@", "zR@")]:
            v, c = got[key], top.get(key)
            frac = v / c if v is not None and c else None
            lines.append(f"{key:<10}  {label:<10}  {_fmt(v):>8}  {_fmt(c):>8}  {_fmt(frac):>8}")
    return "\n".join(lines)


def _json_safe(v):
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_metrics(path: str | Path, metrics: dict) -> None:
    """Write `metrics` as JSON to `path` atomically (NaN becomes null)."""
    atomic.write_text(path, json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")
