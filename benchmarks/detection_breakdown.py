"""Where a detector loses on a labelled set: finding objects or naming them, and which objects.

    python benchmarks/detection_breakdown.py CHECKPOINT DATA [CHECKPOINT DATA ...] [--score 0.3]

For each (checkpoint, dataset) pair: mAP@0.5 with classes and class-blind (every box one class:
what is left when naming costs nothing), recall at IoU 0.5 of any detection and of those scoring
>= --score, the share of those detections that match no object, and the recall by the objects'
occlusion (labels.json `occlusion`, the hidden share of the object's pixels) and by box area in
terciles. Class-blind matching ignores the predicted class. Runs on the CPU or CUDA (--device).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from sim2sg.eval.boxes import box_iou
from sim2sg.eval.detection import detection_ap
from sim2sg.eval.groundtruth import load_ground_truth
from sim2sg.eval.metrics import align_predictions
from sim2sg.eval.predictions import parse_predictions
from sim2sg.train.data import LabelledDataset
from sim2sg.train.predict import load_predictor, predict_labelled

OCCLUSION_BINS = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.01))


def breakdown(checkpoint: str, data: str, score: float, device: str = "cpu") -> dict:
    """The figures above for one pair, as a dict (recalls in [0, 1], areas in px^2)."""
    model, _, dev = load_predictor(checkpoint, device)
    ds = LabelledDataset(data)
    res = predict_labelled(model, ds, dev, batch_size=16, amp=dev.type == "cuda")
    gt = load_ground_truth(ds.root)
    aligned, _ = align_predictions(gt, parse_predictions(res["predictions"]))
    blind = detection_ap([dataclasses.replace(g, labels=np.ones_like(g.labels)) for g in gt.images],
                         [dataclasses.replace(p, labels=np.ones_like(p.labels)) for p in aligned], {1: "object"})
    labels = json.loads((ds.root / "labels.json").read_text())
    anns: dict[int, list[dict]] = {}
    for a in labels["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    best, occ, area = [], [], []  # per GT object: best score of a detection at IoU >= 0.5 (0: none)
    n_kept = n_false = 0
    for g, p in zip(gt.images, aligned, strict=True):
        gb, pb, ps = np.asarray(g.boxes, float).reshape(-1, 4), np.asarray(p.boxes, float).reshape(-1, 4), np.asarray(p.scores)
        hit = box_iou(gb, pb) >= 0.5
        best += [float(ps[h].max()) if h.any() else 0.0 for h in hit]
        # each GT box's own annotation (the same box), for its occlusion
        ab = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in anns.get(g.image_id, [])], float).reshape(-1, 4)
        own = box_iou(gb, ab).argmax(axis=1) if len(ab) else np.zeros(len(gb), int)
        occ += [float(anns[g.image_id][k].get("occlusion", 0.0)) if len(ab) else 0.0 for k in own]
        area += list((gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1]))
        kept = ps >= score
        n_kept += int(kept.sum())
        n_false += int((~hit[:, kept].any(axis=0)).sum())
    best, occ, area = np.array(best), np.array(occ), np.array(area)
    out = {"mAP@0.5": res["metrics"]["detection"]["mAP@0.5"], "class-blind mAP@0.5": blind["mAP@0.5"],
           "objects": len(best), "recall_any": float(np.mean(best > 0)), f"recall@{score:g}": float(np.mean(best >= score)),
           "detections_kept": n_kept, "false_share": n_false / max(1, n_kept), "by_occlusion": {}, "by_area": {}}
    for lo, hi in OCCLUSION_BINS:
        m = (occ >= lo) & (occ < hi)
        out["by_occlusion"][f"{lo:.1f}-{min(hi, 1.0):.1f}"] = (int(m.sum()), float(np.mean(best[m] >= score)) if m.any() else None)
    q = np.quantile(area, [0, 1 / 3, 2 / 3, 1]) if len(area) else []
    for lo, hi in zip(q[:-1], q[1:]):
        m = (area >= lo) & (area <= hi)
        out["by_area"][f"{lo:.0f}-{hi:.0f}"] = (int(m.sum()), float(np.mean(best[m] >= score)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", help="CHECKPOINT DATA [CHECKPOINT DATA ...]")
    ap.add_argument("--score", type=float, default=0.3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        ap.error("give checkpoints and datasets in pairs")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    for ck, data in zip(a.pairs[::2], a.pairs[1::2]):
        r = breakdown(ck, data, a.score, a.device)
        print(f"{ck} on {data}: {r['objects']} objects")
        print(f"  mAP@0.5 {r['mAP@0.5']:.3f}, class-blind {r['class-blind mAP@0.5']:.3f}; recall any score "
              f"{r['recall_any']:.3f}, score >= {a.score:g} {r[f'recall@{a.score:g}']:.3f}; "
              f"{r['detections_kept']} detections >= {a.score:g}, {r['false_share']:.0%} match no object")
        for key, title in (("by_occlusion", "occlusion"), ("by_area", "area px^2")):
            print(f"  recall >= {a.score:g} by {title}: " + ", ".join(
                f"{k} {v[1]:.3f} (n {v[0]})" if v[1] is not None else f"{k} - (n 0)" for k, v in r[key].items()))


if __name__ == "__main__":
    main()
