"""KITTI label_2 ground truth and the easy / moderate / hard filters."""

from __future__ import annotations

import pytest
from test_eval_relations import pred_image

from sim2sg.errors import InputError
from sim2sg.eval import (
    evaluate,
    kitti_difficulty_mask,
    load_ground_truth,
    read_kitti_labels,
)

EASY = [100.0, 100.0, 150.0, 150.0]      # h 50, occ 0, trunc 0.0
MODERATE = [300.0, 100.0, 330.0, 130.0]  # h 30, occ 1, trunc 0.2
HARD = [500.0, 100.0, 530.0, 130.0]      # h 30, occ 2, trunc 0.4


def line(kind, trunc, occ, box):
    return f"{kind} {trunc:.2f} {occ} -1.57 {box[0]:.2f} {box[1]:.2f} {box[2]:.2f} {box[3]:.2f} 1.5 1.6 3.9 1.0 1.7 20.0 -1.5"


@pytest.fixture
def kitti_dir(tmp_path):
    d = tmp_path / "training" / "label_2"
    d.mkdir(parents=True)
    (d / "000007.txt").write_text("\n".join([
        line("Car", 0.0, 0, EASY), line("Car", 0.2, 1, MODERATE), line("Car", 0.4, 2, HARD),
        line("DontCare", -1, -1, [600, 100, 700, 200]),
    ]) + "\n")
    return tmp_path / "training"


def kitti_preds(objects):
    return {"format": "sim2sg-predictions", "version": 1, "predicate_names": ["__background__"],
            "images": [{"file_name": "000007.png", **{k: v for k, v in pred_image(0, objects).items() if k != "image_id"}}]}


def test_reader(kitti_dir):
    gt = load_ground_truth(kitti_dir)
    assert gt.kind == "kitti" and len(gt.images) == 1
    im = gt.images[0]
    assert im.image_id == 7 and im.file_name == "image_2/000007.png"
    assert im.boxes.tolist() == [EASY, MODERATE, HARD]  # DontCare dropped
    assert im.occlusion.tolist() == [0, 1, 2]
    assert [kitti_difficulty_mask(im, d).tolist() for d in ("easy", "moderate", "hard")] == [
        [True, False, False], [True, True, False], [True, True, True]]
    assert gt.predicates == {}


@pytest.mark.parametrize("difficulty,expected", [
    (None, 34 / 101),         # 1 of 3 found: recall points 0.00..0.33
    ("easy", 1.0),
    ("moderate", 51 / 101),   # 1 of 2
    ("hard", 34 / 101),
])
def test_difficulty_filters(kitti_dir, difficulty, expected):
    gt = load_ground_truth(kitti_dir)
    m = evaluate(gt, kitti_preds([("car", EASY, 0.9)]), kitti_difficulty=difficulty)
    assert m["detection"]["AP@0.5"]["Car"] == pytest.approx(expected)
    assert m["detection"]["AP@0.5"]["Van"] is None
    assert m["detection"]["mAP@0.5"] == pytest.approx(expected)
    assert m["relations"] is None


def test_detections_on_ignored_objects_are_not_false_positives(kitti_dir):
    gt = load_ground_truth(kitti_dir)
    # all three found, the harder ones with higher scores: under "easy" they are ignored
    m = evaluate(gt, kitti_preds([("Car", HARD, 0.99), ("Car", MODERATE, 0.98), ("Car", EASY, 0.5)]),
                 kitti_difficulty="easy")
    assert m["detection"]["AP@0.5"]["Car"] == pytest.approx(1.0)


def test_short_false_detections_are_dropped_below_the_min_height(kitti_dir):
    gt = load_ground_truth(kitti_dir)
    short_fp = ("Car", [800.0, 100.0, 830.0, 130.0], 0.99)  # h 30 < 40 (easy), >= 25 (moderate)
    p = kitti_preds([short_fp, ("Car", EASY, 0.5)])
    assert evaluate(gt, p, kitti_difficulty="easy")["detection"]["AP@0.5"]["Car"] == pytest.approx(1.0)
    # moderate: the FP counts (P 0 then 1/2 at recall 1/2)
    assert evaluate(gt, p, kitti_difficulty="moderate")["detection"]["AP@0.5"]["Car"] == pytest.approx(0.5 * 51 / 101)


def test_difficulty_needs_kitti(tmp_path):
    from test_eval_relations import make_labels, preds

    from sim2sg.eval import ground_truth_from_labels

    gt = ground_truth_from_labels(make_labels([([("cube", [0, 0, 10, 10])], [])]))
    with pytest.raises(InputError, match="KITTI"):
        evaluate(gt, preds(), kitti_difficulty="easy")


@pytest.mark.parametrize("text,field", [
    ("Car 0.0 0 -1.5 1 2 3\n", "line 1"),
    ("Airplane 0.0 0 -1.5 1 2 30 40 1 1 1 1 1 1 0\n", "line 1.type"),
    ("Car 0.0 0 -1.5 10 2 3 40 1 1 1 1 1 1 0\n", "line 1.bbox"),
    ("Car x 0 -1.5 1 2 3 40 1 1 1 1 1 1 0\n", "line 1"),
])
def test_bad_kitti_labels(tmp_path, text, field):
    d = tmp_path / "label_2"
    d.mkdir()
    (d / "000000.txt").write_text(text)
    with pytest.raises(InputError) as e:
        read_kitti_labels(d)
    assert e.value.field == field and "000000.txt" in str(e.value)
