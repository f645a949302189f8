"""Lift predicted 2D scene graphs to 3D: known camera, flat ground (the synthesis step's real-to-sim).

For each predicted object (box [x1, y1, x2, y2] px, category, score), the ray through the bottom
centre of its box meets the support plane (the ground z = 0, the curb for sidewalk classes, the top
of the nearest lifted anchor for classes placed "on" one). That point is the object's front-bottom
edge seen from the camera, so the object is pushed back along the ray's ground direction by half
its depth. Its size comes from the class prior (the environment's sizes) matched to the box height.
What the graph cannot fix (yaw where no rule gives it, appearance) is randomized from the
environment with the caller's generator; relations are re-derived in 3D.

Two objects cannot share the same space: objects are lifted in decreasing score (supports first),
and one whose footprint would sit deeply inside an already lifted object's on the same support
(centre distance below half the sum of their footprint radii) is dropped as a duplicate detection -
the detector's cross-class doubles and its ghosts on textured ground would otherwise become extra
objects in the generated scenes.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from . import graph as sg
from .camera import Camera
from .env import CategorySpec, Environment
from .relations import derive_relations
from .sample import _facing_yaw, road_geometry, sample_context


def _support_point(cam: Camera, box, z: float, max_height: float) -> np.ndarray | None:
    """Where the object of 2D `box` stands on the support plane at height z (world, m).

    Normally the ray through the box's bottom centre meets the plane there. But the box is tight
    around the *visible* pixels: when the object's bottom is hidden (a parked car behind another,
    a house behind trees) the box bottom is too high, and near the horizon a few pixels mean tens
    of meters, so that ray lands far beyond the object (or never meets the plane). An upright
    object at most `max_height` m tall spanning the box's height cannot be farther than
    fy * max_height / box height (camera depth); when the ray's point lies more than 1.5x beyond
    that bound, the object is put at that bound instead, on the ray through the box centre, dropped
    onto the plane. None when the box bottom is at or above the horizon (nothing standing on the
    plane looks like that unless hidden up to there; such boxes are mostly false detections).
    """
    x1, y1, x2, y2 = box
    hit = cam.plane_point(((x1 + x2) / 2, y2), z)
    if hit is None:
        return None
    z_max = cam.fy * max_height / max(y2 - y1, 1.0)
    if cam.world_to_camera(hit[None])[0, 2] <= 1.5 * z_max:
        return hit
    o = np.asarray(cam.position, dtype=np.float64)
    d = cam.pixel_rays(np.array([((x1 + x2) / 2, (y1 + y2) / 2)]))[0]
    per_unit = cam.world_to_camera((o + d)[None])[0, 2]  # camera depth gained per unit of d
    if per_unit <= 1e-9:
        return None
    p = o + d * (z_max / per_unit)
    return np.array([p[0], p[1], z])


def _clamp_ahead(hit: np.ndarray, cam: Camera, spec: CategorySpec, context: dict) -> np.ndarray:
    """On a road, classes placed along it (lane, curb, sidewalk, roadside) stand at most the
    environment's `depth[1]` m ahead of the camera: a point farther out (a heavily occluded
    object's few visible pixels near the horizon) is pulled back along its ground ray to that
    distance, so the detection stays in the scene, where the environment can render such objects."""
    if context.get("kind") != "road" or spec.placement not in ("lane", "curb", "sidewalk", "roadside"):
        return hit
    cy = cam.position[1]
    far = cy + spec.depth[1]
    if hit[1] <= far or hit[1] - cy <= 1e-9:
        return hit
    t = (far - cy) / (hit[1] - cy)
    c = np.array([cam.position[0], cy])
    out = hit.copy()
    out[:2] = c + (hit[:2] - c) * t
    return out


def _candidate_sizes(spec: CategorySpec, env: Environment) -> list[tuple[tuple[float, float, float], dict]]:
    """Possible (size, attributes) of a class: each named scale, or a few sizes along its range."""
    if spec.base_size is not None:
        return [(tuple(b * env.sizes[s] for b in spec.base_size), {"size": s}) for s in spec.scales]
    lo, hi = np.asarray(spec.size_min), np.asarray(spec.size_max)
    return [(tuple((lo + t * (hi - lo)).tolist()), {}) for t in np.linspace(0.0, 1.0, 9)]


def _projected_box(cam: Camera, pos: np.ndarray, size, yaw_deg: float) -> np.ndarray:
    """[x1, y1, x2, y2] px of the yawed 3D bounding box of an object standing at pos."""
    t = math.radians(yaw_deg)
    rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    c = np.array([[x * size[0] / 2, y * size[1] / 2, z * size[2]] for x in (-1, 1) for y in (-1, 1) for z in (0, 1)])
    uv, _ = cam.project(c @ rot.T + pos)
    return np.concatenate([uv.min(0), uv.max(0)])


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _fit(cam: Camera, hit: np.ndarray, box, candidates):
    """(size, attributes, position) of the candidate size whose projection best overlaps `box`;
    the position is the ray hit pushed back by half the footprint along the ground ray."""
    ground_dir = hit[:2] - np.asarray(cam.position[:2])
    ground_dir = ground_dir / max(np.linalg.norm(ground_dir), 1e-9)
    best, best_score = None, -1.0
    for size, attrs in candidates:
        pos = hit.copy()
        pos[:2] += ground_dir * min(size[0], size[1]) / 2
        # Yaw is unknown here: score a size by its best overlap over a few turns.
        score = max(_iou(_projected_box(cam, pos, size, yaw), box) for yaw in (0.0, 30.0, 60.0, 90.0))
        if score > best_score:
            best, best_score = (size, attrs, pos), score
    return best


def lift_graph(pred: nx.MultiDiGraph, env: Environment, camera: Camera, rng: np.random.Generator,
               score_threshold: float = 0.5) -> nx.MultiDiGraph:
    """A 3D scene graph for `env` from predicted graph `pred` (objects need `box`; `score` below
    `score_threshold` are dropped). `camera` is the known camera of the target images (its size
    must match the boxes' pixel frame). Boxes that cannot be lifted (above the horizon) are dropped.
    """
    context = sample_context(env, rng)
    order = {c: i for i, c in enumerate(env.categories)}
    dets = [(i, a) for i, a in sg.objects(pred)
            if a.get("box") is not None and a["category"] in env.category_specs
            and (a.get("score") is None or a["score"] >= score_threshold)]
    # Supports first (objects placed "on" another class need it lifted), then by decreasing score,
    # so that of two colliding detections the more confident one stays.
    dets.sort(key=lambda t: (env.category_specs[t[1]["category"]].placement == "on",
                             -(t[1].get("score") if t[1].get("score") is not None else 1.0),
                             order[t[1]["category"]], t[0]))
    out = sg.new_graph(env.name, camera, context)
    lifted: list[tuple[int, dict]] = []
    for _, a in dets:
        spec = env.spec(a["category"])
        x1, y1, x2, y2 = a["box"]
        foot = ((x1 + x2) / 2, y2)
        z = 0.0
        if spec.placement == "sidewalk" and context["kind"] == "road":
            z = context["curb_height"]
        anchors = [b for _, b in lifted if b["category"] == spec.anchor] if spec.placement == "on" else []
        if spec.placement == "on":
            if not anchors:
                continue
            z = float(np.mean([b["position"][2] + b["size"][2] for b in anchors]))
        candidates = _candidate_sizes(spec, env)
        hit = _support_point(camera, a["box"], z, max(size[2] for size, _ in candidates))
        if hit is None:
            continue
        hit = _clamp_ahead(hit, camera, spec, context)
        size, attrs, pos = _fit(camera, hit, a["box"], candidates)
        if spec.placement == "on":
            sup = min(anchors, key=lambda b: math.dist(b["position"][:2], pos[:2]))
            pos[2] = sup["position"][2] + sup["size"][2]
        if _collides(pos, size, lifted):
            continue
        yaw = _yaw(spec, env, context, pos, lifted, rng)
        node = {"category": spec.name, "position": tuple(float(v) for v in pos), "yaw": yaw % 360.0,
                "size": tuple(float(v) for v in size), "attributes": attrs}
        lifted.append((len(lifted), node))
        sg.add_object(out, len(lifted) - 1, spec.name, node["position"], node["yaw"], node["size"],
                      attributes=dict(attrs, lifted=True), box=a["box"], score=a.get("score"))
    for s, p, o in derive_relations(sg.objects(out), camera, env.predicates, env.relation_threshold,
                                    env.on_tolerance, env.require_category):
        sg.add_relation(out, s, p, o)
    return out


def _collides(pos: np.ndarray, size, lifted: list[tuple[int, dict]]) -> bool:
    """Whether an object at `pos` (m) of `size` overlaps deeply (centre distance < half the sum of
    the footprint radii) an already lifted object standing on the same support height."""
    r = math.hypot(size[0], size[1]) / 2
    for _, b in lifted:
        if abs(b["position"][2] - pos[2]) > 1e-3:
            continue
        rb = math.hypot(b["size"][0], b["size"][1]) / 2
        if math.dist(b["position"][:2], pos[:2]) < 0.5 * (r + rb):
            return True
    return False


def _yaw(spec: CategorySpec, env: Environment, context: dict, pos, lifted, rng) -> float:
    """Yaw from the class's placement rule where it has one (lane direction, facing the road or
    the anchor), plus the class's yaw jitter; otherwise uniform in the class's yaw range."""
    jitter = float(rng.uniform(*spec.yaw)) if spec.yaw[1] > spec.yaw[0] else spec.yaw[0]
    if context["kind"] == "road" and spec.placement in ("lane", "curb"):
        geo = road_geometry(context)
        k = int(np.argmin([abs(c - pos[0]) for c in geo["centres"]]))
        return (180.0 if geo["directions"][k] > 0 else 0.0) + jitter
    if context["kind"] == "road" and spec.placement in ("sidewalk", "roadside"):
        return -90.0 * (1.0 if pos[0] >= 0 else -1.0) + jitter
    if spec.placement == "around" and spec.face_anchor:
        anchors = [b for _, b in lifted if b["category"] == spec.anchor]
        if anchors:
            near = min(anchors, key=lambda b: math.dist(b["position"][:2], pos[:2]))
            return _facing_yaw(np.asarray(near["position"][:2]) - pos[:2]) + jitter
    return jitter
