"""What `sim2sg predict` shows a person: the kept-objects line and the drawing."""

import numpy as np

from sim2sg.train.draw import draw_graph
from sim2sg.train.predict import kept_summary


def _preds(scores):
    return {"images": [{"objects": [{"score": s} for s in scores]}, {"objects": []}]}


def test_nothing_kept_says_the_highest_score_and_a_threshold_that_keeps_it():
    line = kept_summary(_preds([0.38, 0.12]), 0.5)
    assert line.startswith("0 objects on 2 images") and "highest score 0.38" in line and "--score-thresh 0.35" in line
    assert kept_summary(_preds([]), 0.5).endswith("(no detections at all)")
    assert kept_summary(_preds([0.9, 0.6, 0.2]), 0.5).startswith("2 objects on 2 images")


def test_drawing_enlarges_small_images_and_lists_relations_beside_them():
    img = np.zeros((128, 96, 3), np.uint8)
    n = 40  # a pair per relation: far more than fit
    pred = {"boxes": np.tile([[10.0, 10.0, 40.0, 50.0]], (n, 1)), "labels": np.ones(n, int), "scores": np.ones(n),
            "rel_pairs": np.array([[i, (i + 1) % n] for i in range(n)]),
            "rel_scores": np.tile([0.0, 0.9, 0.1], (n, 1))}
    pic = draw_graph(img, pred, ["cube"], ["left", "right"], max_relations=5, panel=200)
    assert pic.shape == (512, 384 + 200, 3)  # 4x to reach a 384 px short side, plus the panel
    side = pic[:, 384:]
    assert (side < 128).any() and (side[300:] == 255).all()  # 5 lines + header + "more": the panel's top only
    assert (pic[:, :384][200:, 200:] == 0).all()  # nothing written over the image away from the boxes
