"""Detection AP@0.5 (pycocotools, 101-point) on hand-worked cases."""

from __future__ import annotations

import pytest
from test_eval_relations import make_labels, pred_image, preds

from sim2sg.eval import evaluate, ground_truth_from_labels

A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
FAR = [200, 200, 210, 210]


def det(images, predictions):
    return evaluate(ground_truth_from_labels(make_labels(images)), preds(*predictions))["detection"]


def test_perfect_detection_is_one():
    d = det([([("cube", A), ("sphere", B)], []), ([("cube", C)], [])],
            [pred_image(0, [("cube", A, 0.9), ("sphere", B, 0.8)]), pred_image(1, [("cube", C, 0.7)])])
    # pycocotools divides by tp + fp + eps: "1" is 1 - 1e-16
    assert d["AP@0.5"]["cube"] == pytest.approx(1.0) and d["AP@0.5"]["sphere"] == pytest.approx(1.0)
    assert d["mAP@0.5"] == pytest.approx(1.0)
    # no GT cylinder: no AP, left out of the mean
    assert d["AP@0.5"]["cylinder"] is None
    assert d["num_gt"] == {"cube": 2, "sphere": 1, "cylinder": 0}


def test_one_of_two_missed():
    # Recall stops at 1/2 with precision 1: the 51 recall points 0.00..0.50 have precision 1.
    d = det([([("cube", A), ("cube", B)], [])], [pred_image(0, [("cube", A, 0.99)])])
    assert d["AP@0.5"]["cube"] == pytest.approx(51 / 101)


def test_false_positive_ranked_above_a_true_positive():
    # Ranked: TP 0.9 (R .5, P 1), FP 0.8 (R .5, P .5), TP 0.7 (R 1, P 2/3).
    # Interpolated precision: 1 for recall <= 0.5 (51 points), 2/3 above (50 points).
    d = det([([("cube", A), ("cube", B)], [])],
            [pred_image(0, [("cube", A, 0.9), ("cube", FAR, 0.8), ("cube", B, 0.7)])])
    assert d["AP@0.5"]["cube"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_false_positive_first_then_only_true_positive():
    d = det([([("cube", A)], [])], [pred_image(0, [("cube", FAR, 0.9), ("cube", A, 0.8)])])
    assert d["AP@0.5"]["cube"] == pytest.approx(0.5)


def test_duplicate_detection_is_a_false_positive():
    d = det([([("cube", A)], [])], [pred_image(0, [("cube", A, 0.9), ("cube", A, 0.8)])])
    assert d["AP@0.5"]["cube"] == pytest.approx(1.0)  # the duplicate ranks after full recall: no effect
    d = det([([("cube", A), ("cube", B)], [])],
            [pred_image(0, [("cube", A, 0.9), ("cube", A, 0.8), ("cube", B, 0.7)])])
    assert d["AP@0.5"]["cube"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_wrong_class_and_images_without_predictions():
    d = det([([("cube", A)], []), ([("sphere", B)], [])], [pred_image(0, [("sphere", A, 0.9)])])
    assert d["AP@0.5"]["cube"] == 0.0
    assert d["AP@0.5"]["sphere"] == 0.0
    assert d["mAP@0.5"] == 0.0


def test_crowd_gt_is_ignored_by_plain_iou():
    labels = make_labels([([("cube", A), ("cube", [0, 0, 100, 100])], [])])
    labels["annotations"][1]["iscrowd"] = 1
    gt = ground_truth_from_labels(labels)
    # detection on the crowd box: neither TP nor FP
    m = evaluate(gt, preds(pred_image(0, [("cube", [0, 0, 100, 100], 0.95), ("cube", A, 0.9)])))
    assert m["detection"]["AP@0.5"]["cube"] == pytest.approx(1.0)
    assert m["detection"]["num_gt"]["cube"] == 1
    # a small detection inside the crowd box has IoU 0.01 with it: still a false positive
    m = evaluate(gt, preds(pred_image(0, [("cube", [50, 50, 60, 60], 0.95), ("cube", A, 0.9)])))
    assert m["detection"]["AP@0.5"]["cube"] == pytest.approx(0.5)
