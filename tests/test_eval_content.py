"""Content-gap distances on hand-worked graph sets."""

import numpy as np
import pytest

from sim2sg.eval.content import content_gap, placement_error, wasserstein_1d
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera

CAM = Camera(64, 64, 50.0, 50.0, 32.0, 32.0, (0.0, -10.0, 5.0), (0.0, 0.0, 0.0))


def scene(cats_xy, rels=()):
    g = sg.new_graph("t", CAM, {})
    for i, (c, x, y) in enumerate(cats_xy):
        sg.add_object(g, i, c, (x, y, 0), 0, (1, 1, 1))
    for s, p, o in rels:
        sg.add_relation(g, s, p, o)
    return g


def test_identical_sets_have_zero_gap():
    a = [scene([("cube", 0, 0), ("sphere", 1, 2)], [(1, "right", 0)])]
    gap = content_gap(a, a, ["cube", "sphere"], ["left", "right"])
    assert gap["count_tv"] == 0 and gap["position_w1"] == 0 and gap["predicate_tv"] == 0 and gap["position_w1_any"] == 0


def test_hand_worked_gap():
    gen = [scene([("cube", 0, 0)]), scene([("cube", 0, 0)])]            # 1 cube per image, at x=0
    tgt = [scene([("cube", 2, 0), ("cube", 2, 0)]), scene([("cube", 2, 0), ("cube", 2, 0)])]
    gap = content_gap(gen, tgt, ["cube"], ["left"])
    assert gap["count_tv"] == pytest.approx(1.0)         # count histograms {1: 1.0} vs {2: 1.0}
    assert gap["position_w1"] == pytest.approx(1.0)      # x shifted by 2 m, y equal: mean over axes


def test_position_w1_any_class_ignores_what_the_objects_are():
    """Same places, classes swapped: the per-class W1 sees two 2 m shifts, the class-blind one none."""
    gen = [scene([("cube", 0, 0), ("sphere", 2, 0)])]
    tgt = [scene([("sphere", 0, 0), ("cube", 2, 0)])]
    gap = content_gap(gen, tgt, ["cube", "sphere"], ["left"])
    assert gap["position_w1"] == pytest.approx(1.0)      # x off by 2 m per class, y equal: mean over axes
    assert gap["position_w1_any"] == pytest.approx(0.0)
    assert content_gap(gen, [], ["cube"], ["left"])["position_w1_any"] is None


def test_wasserstein_shift():
    assert wasserstein_1d(np.arange(10.0), np.arange(10.0) + 3) == pytest.approx(3.0)


def test_placement_error_pairs_objects_by_class_and_box_in_the_true_pixel_frame():
    """Lifted boxes live at the training size (64x64 here), true boxes at the image's (96x48): a
    lifted box is scaled per axis before the IoU. One-to-one, best overlap first; another class or
    an IoU below 0.5 is no match; objects without a box are not counted."""
    true = sg.new_graph("t", CAM.resized(96, 48), {})
    sg.add_object(true, 0, "cube", (1.0, 2.0, 0), 0, (1, 1, 1), box=(0, 0, 48, 24))
    sg.add_object(true, 1, "cube", (5.0, 5.0, 0), 0, (1, 1, 1), box=(48, 24, 96, 48))
    sg.add_object(true, 2, "sphere", (0.0, 0.0, 0), 0, (1, 1, 1), box=(0, 24, 48, 48))
    sg.add_object(true, 3, "sphere", (9.0, 9.0, 0), 0, (1, 1, 1))  # no box: not counted
    lifted = sg.new_graph("t", CAM, {})
    sg.add_object(lifted, 0, "cube", (1.3, 2.4, 0.5), 0, (1, 1, 1), box=(0, 0, 32, 32))      # = true 0: 0.5 m
    sg.add_object(lifted, 1, "cube", (1.0, 2.0, 0), 0, (1, 1, 1), box=(0, 0, 30, 32))        # true 0 taken
    sg.add_object(lifted, 2, "cube", (0.0, 0.0, 0), 0, (1, 1, 1), box=(0, 32, 32, 64))       # a sphere's box
    sg.add_object(lifted, 3, "cube", (5.0, 6.0, 0), 0, (1, 1, 1), box=(32, 32, 64, 64))      # = true 1: 1 m
    sg.add_object(lifted, 4, "sphere", (0.0, 0.0, 0), 0, (1, 1, 1), box=(0, 32, 12, 64))     # IoU 0.375
    p = placement_error([(lifted, true)])
    assert (p["matched"], p["lifted"], p["true"]) == (2, 5, 3)
    assert p["median_m"] == pytest.approx(0.75) and p["mean_m"] == pytest.approx(0.75)
    assert placement_error([])["median_m"] is None
