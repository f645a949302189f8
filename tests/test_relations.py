"""Relations derived from 3D on hand-worked cases (CLEVR's definition, `on` from support)."""

import numpy as np
import pytest

from sim2sg.scene.camera import Camera
from sim2sg.scene.relations import derive_relations

# Looking along +Y from behind the origin: behind = +Y, left = -X.
CAM = Camera(64, 64, 50.0, 50.0, 32.0, 32.0, (0.0, -10.0, 5.0), (0.0, 0.0, 0.0))
SPATIAL = ["front", "behind", "left", "right"]


def obj(cat, x, y, z=0.0, size=(1, 1, 1), yaw=0.0):
    return {"category": cat, "position": (x, y, z), "size": size, "yaw": yaw}


def test_ground_directions():
    d = CAM.ground_directions()
    np.testing.assert_allclose(d["behind"], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(d["left"], [-1, 0, 0], atol=1e-12)


def test_left_right_front_behind_by_hand():
    objs = [(0, obj("cube", 0, 0)), (1, obj("cube", 1, 0)), (2, obj("cube", 0.1, 3))]
    rel = derive_relations(objs, CAM, SPATIAL, threshold=0.2)
    # 1 is right of 0 and 0 left of 1; 2 is behind 0 and 1 (x offset 0.1 from 0 is under threshold).
    assert (1, "right", 0) in rel and (0, "left", 1) in rel
    assert (2, "behind", 0) in rel and (0, "front", 2) in rel and (2, "behind", 1) in rel
    assert (2, "right", 0) not in rel and (0, "left", 2) not in rel
    assert (2, "left", 1) in rel  # 2 is 0.9 m left of 1
    assert len(rel) == 8


def test_threshold_is_strict():
    objs = [(0, obj("cube", 0, 0)), (1, obj("cube", 0.2, 0))]
    assert derive_relations(objs, CAM, SPATIAL, threshold=0.2) == []
    assert derive_relations(objs, CAM, SPATIAL, threshold=0.19) == [(0, "left", 1), (1, "right", 0)]


def test_on_from_support_contact():
    table = obj("table", 0, 0, 0, size=(2.0, 1.0, 0.75), yaw=90.0)  # footprint 1 x 2 after the turn
    laptop = obj("laptop", 0.3, 0.8, 0.75, size=(0.3, 0.2, 0.2))
    floating = obj("laptop", 0.0, 0.0, 0.9, size=(0.3, 0.2, 0.2))
    off_edge = obj("laptop", 0.8, 0.0, 0.75, size=(0.3, 0.2, 0.2))
    objs = [(0, table), (1, laptop), (2, floating), (3, off_edge)]
    on = [t for t in derive_relations(objs, CAM, ["on"], threshold=0.2, on_tolerance=0.02)]
    assert on == [(1, "on", 0)]


@pytest.mark.parametrize("require,expected", [((), 2), (("car",), 2), (("house",), 0)])
def test_require_category(require, expected):
    objs = [(0, obj("car", 0, 0)), (1, obj("tree", 5, 0))]
    assert len(derive_relations(objs, CAM, SPATIAL, 0.2, require_category=require)) == expected
