"""Content-gap distances on hand-worked graph sets."""

import numpy as np
import pytest

from sim2sg.eval.content import content_gap, wasserstein_1d
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
    assert gap["count_tv"] == 0 and gap["position_w1"] == 0 and gap["predicate_tv"] == 0


def test_hand_worked_gap():
    gen = [scene([("cube", 0, 0)]), scene([("cube", 0, 0)])]            # 1 cube per image, at x=0
    tgt = [scene([("cube", 2, 0), ("cube", 2, 0)]), scene([("cube", 2, 0), ("cube", 2, 0)])]
    gap = content_gap(gen, tgt, ["cube"], ["left"])
    assert gap["count_tv"] == pytest.approx(1.0)         # count histograms {1: 1.0} vs {2: 1.0}
    assert gap["position_w1"] == pytest.approx(1.0)      # x shifted by 2 m, y equal: mean over axes


def test_wasserstein_shift():
    assert wasserstein_1d(np.arange(10.0), np.arange(10.0) + 3) == pytest.approx(3.0)
