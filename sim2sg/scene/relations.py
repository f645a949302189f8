"""Relations derived from 3D, never typed by hand, so labels always agree with geometry.

front / behind / left / right are CLEVR's: with d_p the camera-relative ground-plane direction of
predicate p (`Camera.ground_directions`), object j is <p> of object i iff
(c_j - c_i) . d_p > threshold, giving the triplet (j, p, i), "j is p of i". Only the ground-plane
(x, y) of the positions matters since d_p has no z component.

on: A is on B iff A's bottom lies within `on_tolerance` of B's top (B.z + B.size_z) and A's
centre lies over B's footprint (B's yawed size_x x size_y rectangle).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from sim2sg.scene.camera import Camera
from sim2sg.scene.environment import SPATIAL_PREDICATES


def _over_footprint(p_xy: np.ndarray, b_pos, b_yaw: float, b_size) -> bool:
    """Whether ground point p_xy lies over object B's (yawed) footprint rectangle."""
    d = p_xy - np.asarray(b_pos[:2], dtype=np.float64)
    c, s = math.cos(math.radians(b_yaw)), math.sin(math.radians(b_yaw))
    local = np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])  # rotate by -yaw
    return abs(local[0]) <= b_size[0] / 2 + 1e-9 and abs(local[1]) <= b_size[1] / 2 + 1e-9


def derive_relations(
    objects: Sequence[tuple[int, dict]],
    camera: Camera,
    predicates: Iterable[str],
    threshold: float,
    on_tolerance: float = 0.02,
    require_category: Iterable[str] = (),
) -> list[tuple[int, str, int]]:
    """Sorted (subject, predicate, object) triplets for `objects` = [(id, node attributes)].

    Node attributes need `category`, `position` (x, y, z) m, `yaw` deg, `size` (sx, sy, sz) m.
    `require_category`: if non-empty, keep only triplets with a subject or object of these classes.
    """
    preds = set(predicates)
    dirs = camera.ground_directions()
    spatial = [p for p in SPATIAL_PREDICATES if p in preds]
    ids = [i for i, _ in objects]
    pos = np.array([a["position"] for _, a in objects], dtype=np.float64).reshape(-1, 3)
    out: list[tuple[int, str, int]] = []
    if len(ids) >= 2 and spatial:
        delta = pos[None, :, :2] - pos[:, None, :2]  # [i, j] = c_j - c_i
        for p in spatial:
            proj = delta @ dirs[p][:2]
            ii, jj = np.nonzero(proj > threshold)
            out += [(ids[j], p, ids[i]) for i, j in zip(ii, jj) if i != j]
    if "on" in preds:
        for ia, (a_id, a) in enumerate(objects):
            for ib, (b_id, b) in enumerate(objects):
                if ia == ib:
                    continue
                top = b["position"][2] + b["size"][2]
                if abs(a["position"][2] - top) <= on_tolerance and _over_footprint(
                        pos[ia, :2], b["position"], b["yaw"], b["size"]):
                    out.append((a_id, "on", b_id))
    req = set(require_category)
    if req:
        cat = {i: a["category"] for i, a in objects}
        out = [t for t in out if cat[t[0]] in req or cat[t[2]] in req]
    return sorted(out)
