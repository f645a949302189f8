"""Hand-worked triplet recall cases (neural-motifs / Scene-Graph-Benchmark definitions)."""

from __future__ import annotations

import numpy as np
import pytest

from sim2sg.eval import (
    align_predictions,
    box_iou,
    evaluate,
    ground_truth_from_labels,
    parse_predictions,
    triplet_hit_ranks,
)

CATS = ["cube", "sphere", "cylinder"]
PREDICATES = ["front", "behind", "left", "right"]
NAMES = ["__background__"] + PREDICATES


def make_labels(images):
    """labels.json dict from ``[(objects, relations)]``: objects ``(category, [x1, y1, x2, y2])``,
    relations ``(subject index, predicate, object index)``."""
    out = {
        "info": {"format": "sim2sg-labels", "version": 1},
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CATS)],
        "predicate_categories": [{"id": i + 1, "name": n} for i, n in enumerate(PREDICATES)],
        "images": [], "annotations": [], "relationships": [],
    }
    for image_id, (objects, relations) in enumerate(images):
        out["images"].append({"id": image_id, "file_name": f"images/{image_id:06d}.png", "width": 256, "height": 256})
        first = len(out["annotations"])
        for cat, (x1, y1, x2, y2) in objects:
            out["annotations"].append({"id": len(out["annotations"]), "image_id": image_id,
                                       "category_id": CATS.index(cat) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                       "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for s, p, o in relations:
            out["relationships"].append({"id": len(out["relationships"]), "image_id": image_id,
                                         "subject_id": first + s, "object_id": first + o,
                                         "predicate_id": PREDICATES.index(p) + 1})
    return out


def pred_image(image_id, objects, relations=(), background=None):
    """objects ``(category, box, score)``; relations ``(s, o, {predicate: score})`` (+ background)."""
    rels = []
    for s, o, scores in relations:
        vec = [0.0] * len(NAMES)
        for name, v in scores.items():
            vec[NAMES.index(name)] = v
        rels.append({"subject": s, "object": o, "scores": vec})
    return {"image_id": image_id,
            "objects": [{"box": list(b), "category": c, "score": s} for c, b, s in objects],
            "relations": rels}


def preds(*images):
    return {"format": "sim2sg-predictions", "version": 1, "predicate_names": list(NAMES), "images": list(images)}


A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]


def run(images, predictions):
    return evaluate(ground_truth_from_labels(make_labels(images)), preds(*predictions))["relations"]


def test_perfect_prediction_reaches_one_and_its_ceiling():
    objs = [("cube", A), ("sphere", B), ("cylinder", C)]
    rels = [(0, "left", 1), (1, "left", 2), (2, "right", 0)]
    p = pred_image(0, [(c, b, 1.0) for c, b in objs],
                   [(0, 1, {"left": 1.0}), (1, 2, {"left": 1.0}), (2, 0, {"right": 1.0})])
    r = run([(objs, rels)], [p])
    for mode in ("graph_constraint", "no_graph_constraint"):
        for k in ("R@20", "R@50", "R@100", "mR@20", "mR@100"):
            assert r[mode][k] == 1.0
            assert r["ceiling"][mode][k] == 1.0
    assert r["num_triplets"] == 3 and r["num_images"] == 1


def test_two_predicates_on_one_pair_graph_constraint_counts_one():
    objs = [("cube", A), ("sphere", B)]
    p = pred_image(0, [("cube", A, 1.0), ("sphere", B, 1.0)], [(0, 1, {"front": 0.9, "left": 0.8})])
    r = run([(objs, [(0, "front", 1), (0, "left", 1)])], [p])
    assert r["graph_constraint"]["R@20"] == 0.5  # only the argmax, "front"
    assert r["no_graph_constraint"]["R@20"] == 1.0
    assert r["ceiling"]["graph_constraint"]["R@20"] == 0.5
    assert r["ceiling"]["no_graph_constraint"]["R@20"] == 1.0
    # per predicate: "front" found, "left" lost to the constraint
    assert r["graph_constraint"]["per_predicate"]["front"]["R@20"] == 1.0
    assert r["graph_constraint"]["per_predicate"]["left"]["R@20"] == 0.0
    assert r["graph_constraint"]["per_predicate"]["behind"]["R@20"] is None
    assert r["graph_constraint"]["mR@20"] == 0.5


@pytest.mark.parametrize("mode", ["graph_constraint", "no_graph_constraint"])
def test_correct_triplet_ranked_26th(mode):
    # 2 true objects + 5 decoys (other class, far away): 25 decoy pairs outscore the true one.
    decoys = [("cylinder", [100 + 20 * i, 100, 110 + 20 * i, 110], 1.0) for i in range(5)]
    objects = [("cube", A, 1.0), ("sphere", B, 1.0)] + decoys
    pairs = [(s, o) for s in range(7) for o in range(7) if s != o and (s, o) not in ((0, 1), (1, 0))]
    rels = [(s, o, {"left": 0.9 - 0.01 * i}) for i, (s, o) in enumerate(pairs[:25])]
    rels.append((0, 1, {"left": 0.5}))
    r = run([([("cube", A), ("sphere", B)], [(0, "left", 1)])], [pred_image(0, objects, rels)])
    assert r[mode]["R@20"] == 0.0
    assert r[mode]["R@50"] == 1.0
    assert r[mode]["R@100"] == 1.0


def test_swapped_subject_and_object_does_not_match():
    p = pred_image(0, [("cube", A, 1.0), ("sphere", B, 1.0)], [(1, 0, {"left": 1.0})])
    r = run([([("cube", A), ("sphere", B)], [(0, "left", 1)])], [p])
    assert r["graph_constraint"]["R@100"] == 0.0
    assert r["no_graph_constraint"]["R@100"] == 0.0


def test_wrong_class_does_not_match():
    p = pred_image(0, [("cylinder", A, 1.0), ("sphere", B, 1.0)], [(0, 1, {"left": 1.0})])
    r = run([([("cube", A), ("sphere", B)], [(0, "left", 1)])], [p])
    assert r["graph_constraint"]["R@100"] == 0.0


def test_one_prediction_matches_two_identical_gt_triplets():
    # Two GT cubes on the same box, each "left" of the sphere: one predicted triplet recalls both.
    objs = [("cube", A), ("cube", A), ("sphere", B)]
    p = pred_image(0, [("cube", A, 1.0), ("sphere", B, 1.0)], [(0, 1, {"left": 1.0})])
    r = run([(objs, [(0, "left", 2), (1, "left", 2)])], [p])
    assert r["graph_constraint"]["R@20"] == 1.0


def test_background_is_never_a_triplet_even_when_it_scores_highest():
    # Background 0.9 on the true pair: excluded, "left" (0.1) is the pair's triplet and is recalled.
    p = pred_image(0, [("cube", A, 1.0), ("sphere", B, 1.0)],
                   [(0, 1, {"__background__": 0.9, "left": 0.1})])
    r = run([([("cube", A), ("sphere", B)], [(0, "left", 1)])], [p])
    assert r["graph_constraint"]["R@20"] == 1.0
    assert r["no_graph_constraint"]["R@20"] == 1.0


def test_recall_is_averaged_over_images_not_pooled():
    img0 = ([("cube", A), ("sphere", B)], [(0, "left", 1), (0, "front", 1)])
    img1 = ([("cube", A), ("sphere", B)], [(1, "right", 0)])
    img2 = ([("cube", A)], [])  # no GT relations: skipped, whatever is predicted
    p0 = pred_image(0, [("cube", A, 1.0), ("sphere", B, 1.0)], [(0, 1, {"left": 1.0})])
    p1 = pred_image(1, [("cube", A, 1.0), ("sphere", B, 1.0)], [(1, 0, {"right": 1.0})])
    r = run([img0, img1, img2], [p0, p1])
    assert r["graph_constraint"]["R@20"] == pytest.approx(0.75)  # (1/2 + 1/1) / 2, pooled: 2/3
    assert r["num_images"] == 2


def test_mean_recall_averages_predicates():
    objs = [("cube", A), ("sphere", B), ("cylinder", C)]
    gt_rels = [(0, "left", 1), (1, "left", 2), (0, "left", 2), (2, "front", 0)]
    p = pred_image(0, [(c, b, 1.0) for c, b in objs],
                   [(0, 1, {"left": 1.0}), (1, 2, {"left": 1.0}), (0, 2, {"left": 1.0}), (2, 0, {"behind": 1.0})])
    r = run([(objs, gt_rels)], [p])
    assert r["graph_constraint"]["R@20"] == 0.75
    assert r["graph_constraint"]["mR@20"] == 0.5  # left 3/3, front 0/1; absent predicates left out


def test_image_without_predictions_counts_as_zero():
    img = ([("cube", A), ("sphere", B)], [(0, "left", 1)])
    p0 = pred_image(0, [("cube", A, 1.0), ("sphere", B, 1.0)], [(0, 1, {"left": 1.0})])
    m = evaluate(ground_truth_from_labels(make_labels([img, img])), preds(p0))
    assert m["images_without_predictions"] == 1
    assert m["relations"]["graph_constraint"]["R@20"] == 0.5


@pytest.mark.parametrize("y2,hit", [(20, True), (21, False)])
def test_iou_threshold_inclusive_no_plus_one(y2, hit):
    # [0,0,10,10] vs [0,0,10,20]: IoU 100/200 = 0.5 exactly -> match (>= 0.5); y2 = 21 -> 100/210.
    p = pred_image(0, [("cube", [0, 0, 10, y2], 1.0), ("sphere", B, 1.0)], [(0, 1, {"left": 1.0})])
    r = run([([("cube", A), ("sphere", B)], [(0, "left", 1)])], [p])
    assert r["graph_constraint"]["R@20"] == (1.0 if hit else 0.0)


def test_box_iou_has_no_plus_one():
    # With the +1 convention this would be 4/14; continuous coordinates give 1/7.
    assert box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3]]))[0, 0] == pytest.approx(1 / 7)
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 0.0


def test_ties_break_deterministically_by_pair_order():
    # Two equally scored triplets: the earlier pair in the file ranks first.
    objs = [("cube", A), ("sphere", B), ("cylinder", C)]
    p = pred_image(0, [(c, b, 1.0) for c, b in objs],
                   [(0, 1, {"left": 0.5}), (1, 2, {"left": 0.5})])
    gt = ground_truth_from_labels(make_labels([(objs, [(0, "left", 1), (1, "left", 2)])]))
    aligned, _ = align_predictions(gt, parse_predictions(preds(p)))
    ranks = triplet_hit_ranks(gt.images[0], aligned[0], np.array([1, 2, 3, 4]), graph_constraint=True)
    assert ranks.tolist() == [0, 1]


def clevr_like(n=6):
    """n objects on a diagonal; every ordered pair has one left/right and one front/behind."""
    objs = [("cube", [30 * i, 30 * i, 30 * i + 20, 30 * i + 20]) for i in range(n)]
    rels = []
    for s in range(n):
        for o in range(n):
            if s != o:
                rels += [(s, "left" if s < o else "right", o), (s, "front" if s > o else "behind", o)]
    return objs, rels


def test_ceiling_clevr_six_objects():
    objs, rels = clevr_like()
    assert len(rels) == 60
    r = run([(objs, rels)], [pred_image(0, [])])
    g, ng = r["ceiling"]["graph_constraint"], r["ceiling"]["no_graph_constraint"]
    # graph constraint: 30 pairs -> at most one triplet each
    assert (g["R@20"], g["R@50"], g["R@100"]) == pytest.approx((20 / 60, 30 / 60, 30 / 60))
    assert (ng["R@20"], ng["R@50"], ng["R@100"]) == pytest.approx((20 / 60, 50 / 60, 1.0))
    assert r["graph_constraint"]["R@100"] == 0.0


def test_zero_shot_recall_counts_only_triplets_unseen_in_training():
    from sim2sg.eval import ground_truth_from_labels as gtl
    from sim2sg.eval import training_triplets

    objs = [("cube", A), ("sphere", B), ("cylinder", C)]
    rels = [(0, "left", 1), (1, "left", 2)]  # cube-left-sphere, sphere-left-cylinder
    train = training_triplets(gtl(make_labels([([("cube", A), ("sphere", B)], [(0, "left", 1)])])))
    assert train == {("cube", "left", "sphere")}
    # Only the seen triplet is predicted: R@20 = 1/2, zR@20 = 0 (the unseen one is missed).
    p = pred_image(0, [(c, b, 1.0) for c, b in objs], [(0, 1, {"left": 1.0})])
    m = evaluate(gtl(make_labels([(objs, rels)])), preds(p), train_triplets=train)["relations"]
    g = m["graph_constraint"]
    assert g["R@20"] == 0.5 and g["zR@20"] == 0.0 and g["zero_shot_triplets"] == 1
    assert m["ceiling"]["graph_constraint"]["zR@20"] == 1.0 and m["train_triplets"] == 1
    p2 = pred_image(0, [(c, b, 1.0) for c, b in objs], [(1, 2, {"left": 1.0})])
    assert evaluate(gtl(make_labels([(objs, rels)])), preds(p2), train_triplets=train)["relations"][
        "graph_constraint"]["zR@20"] == 1.0
    # Without training triplets there is no zR key.
    assert "zR@20" not in evaluate(gtl(make_labels([(objs, rels)])), preds(p))["relations"]["graph_constraint"]
