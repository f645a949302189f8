"""Evaluation: detection AP@0.5 and scene-graph triplet recall, as pure functions.

    gt = load_ground_truth("data/clevr_val")        # labels.json, or KITTI label_2/
    preds = load_predictions("preds.json")          # docs/formats.md, "Predictions JSON"
    metrics = evaluate(gt, preds)                   # JSON-ready dict
    print(format_table(metrics)); write_metrics("metrics.json", metrics)

Boxes are [x1, y1, x2, y2] pixels, continuous coordinates; IoU has no +1 anywhere.
"""

from sim2sg.eval.boxes import box_iou
from sim2sg.eval.detection import detection_ap
from sim2sg.eval.groundtruth import (
    KITTI_DIFFICULTIES,
    GroundTruth,
    ImageGT,
    apply_kitti_difficulty,
    ground_truth_from_labels,
    kitti_difficulty_mask,
    load_ground_truth,
    read_kitti_labels,
    read_labels,
)
from sim2sg.eval.metrics import (
    align_predictions,
    evaluate,
    format_table,
    training_triplets,
    write_metrics,
)
from sim2sg.eval.predictions import (
    AlignedPrediction,
    ImagePrediction,
    Predictions,
    load_predictions,
    parse_predictions,
)
from sim2sg.eval.recall import perfect_prediction, recall_metrics, triplet_hit_ranks

__all__ = [
    "KITTI_DIFFICULTIES", "AlignedPrediction", "GroundTruth", "ImageGT", "ImagePrediction", "Predictions",
    "kitti_difficulty_mask",
    "align_predictions", "apply_kitti_difficulty", "box_iou", "detection_ap", "evaluate", "format_table",
    "ground_truth_from_labels", "load_ground_truth", "load_predictions", "parse_predictions",
    "perfect_prediction", "read_kitti_labels", "read_labels", "recall_metrics", "training_triplets",
    "triplet_hit_ranks",
    "write_metrics",
]
