"""Lift predicted 2D scene graphs to 3D: known camera, flat ground (the synthesis step's real-to-sim).

For each predicted object (box [x1, y1, x2, y2] px, category, score), the ray through the bottom
centre of its box meets the support plane (the ground z = 0, the curb for sidewalk classes, the top
of the nearest lifted anchor for classes placed "on" one). That point is the bottom of the object's
silhouette, so each prior size of the class (the environment's sizes, a few trial yaws) is placed
where its own projected mesh has that bottom point (`_fit`), and the size whose projected box
overlaps the detected box best is kept; a box that no size overlaps by `min_fit_iou` is dropped.
What the graph cannot fix (yaw where no rule gives it, appearance) is randomized from the
environment with the caller's generator; relations are re-derived in 3D.

Two objects cannot share the same space: objects are lifted in decreasing score (supports first),
and one whose footprint would sit deeply inside an already lifted object's on the same support
(centre distance below half the sum of their footprint radii) is dropped as a duplicate detection -
the detector's cross-class doubles and its ghosts on textured ground would otherwise become extra
objects in the generated scenes.
"""

from __future__ import annotations

import functools
import math

import networkx as nx
import numpy as np

from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera
from sim2sg.scene.environment import CategorySpec, Environment
from sim2sg.scene.meshes import object_mesh
from sim2sg.scene.relations import derive_relations
from sim2sg.scene.sdr import facing_yaw, road_geometry, sample_context


def _support_point(cam: Camera, box, z: float, max_height: float,
                   max_footprint: float = 0.0) -> tuple[np.ndarray, bool] | None:
    """(point, exact): where the object of 2D `box` stands on the support plane at height z
    (world, m), and whether that point is the box's bottom-centre ray's (exact) or a bound.

    Normally the ray through the box's bottom centre meets the plane there. But the box is tight
    around the *visible* pixels: when the object's bottom is hidden (a parked car behind another,
    a house behind trees) the box bottom is too high, and near the horizon a few pixels mean tens
    of meters, so that ray lands far beyond the object (or never meets the plane). An upright
    object at most `max_height` m tall, whose footprint spans at most `max_footprint` m in any
    direction, seen along a ray `theta` below the horizontal, shows at most
    max_height cos(theta) + max_footprint sin(theta) m across that ray in the image's vertical
    (its side and, seen from above, its top), so spanning the box's height it cannot be farther
    than fy times that over the box height (camera depth). Without the footprint term the bound
    is too near for a camera looking down steeply (a 1 m cube 34 degrees below: 1.6x too near) and
    fully visible objects were taken for hidden ones. When the ray's point lies more than 1.5x
    beyond that bound, the object is put at the bound instead, on the ray through the box centre,
    dropped onto the plane. None when the box bottom is at or above the horizon (nothing standing
    on the plane looks like that unless hidden up to there; such boxes are mostly false detections).
    """
    x1, y1, x2, y2 = box
    hit = cam.plane_point(((x1 + x2) / 2, y2), z)
    if hit is None:
        return None
    d = cam.pixel_rays(np.array([((x1 + x2) / 2, (y1 + y2) / 2)]))[0]
    sin_t = min(max(-float(d[2]), 0.0), 1.0)  # the box centre's ray, below the horizontal
    extent = max_height * math.sqrt(1.0 - sin_t * sin_t) + max_footprint * sin_t
    z_max = cam.fy * extent / max(y2 - y1, 1.0)
    if cam.world_to_camera(hit[None])[0, 2] <= 1.5 * z_max:
        return hit, True
    o = np.asarray(cam.position, dtype=np.float64)
    per_unit = cam.world_to_camera((o + d)[None])[0, 2]  # camera depth gained per unit of d
    if per_unit <= 1e-9:
        return None
    p = o + d * (z_max / per_unit)
    return np.array([p[0], p[1], z]), False


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


@functools.lru_cache(maxsize=None)
def _silhouette_points(mesh: str) -> np.ndarray:
    """(P, 3) points of object asset `mesh` in its unit frame whose projections bound its image
    box: its distinct vertices, or for a detailed asset (over 512) the vertex farthest along each
    of 512 directions spread over the sphere (the hull extremes a view can see)."""
    pts = np.unique(object_mesh(mesh).points.astype(np.float64), axis=0)
    if len(pts) <= 512:
        return pts
    k = np.arange(512) + 0.5
    z = 1 - 2 * k / 512
    t = np.pi * (1 + 5 ** 0.5) * k  # a Fibonacci sphere of directions
    dirs = np.stack([np.sqrt(1 - z * z) * np.cos(t), np.sqrt(1 - z * z) * np.sin(t), z], axis=1)
    return np.unique(pts[np.argmax(pts @ dirs.T, axis=0)], axis=0)


def _projected_boxes(cam: Camera, pos: np.ndarray, sizes: np.ndarray, yaws: np.ndarray,
                     unit: np.ndarray) -> np.ndarray:
    """(C, 4) [x1, y1, x2, y2] px, clipped to the image, of C objects whose unit-frame silhouette
    points `unit` (P, 3) are scaled by sizes (C, 3) m, turned by yaws (C,) deg about +Z and stand
    at pos (C, 3) m (bottom centre, world)."""
    t = np.radians(yaws)[:, None]
    p = unit[None] * sizes[:, None, :]
    x = p[..., 0] * np.cos(t) - p[..., 1] * np.sin(t)
    y = p[..., 0] * np.sin(t) + p[..., 1] * np.cos(t)
    world = np.stack([x, y, p[..., 2]], axis=-1) + pos[:, None, :]
    uv, _ = cam.project(world.reshape(-1, 3))
    uv = uv.reshape(len(pos), -1, 2)
    box = np.concatenate([uv.min(1), uv.max(1)], axis=1)
    return np.clip(box, 0.0, [cam.width, cam.height, cam.width, cam.height])


def _iou(a: np.ndarray, b) -> np.ndarray:
    """IoU of boxes a (C, 4) with one box b, [x1, y1, x2, y2]."""
    w = np.clip(np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1]), 0, None)
    inter = w * h
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


_FIT_YAWS = (0.0, 30.0, 60.0, 90.0)


def _fit(cam: Camera, hit: np.ndarray, box, candidates, mesh: str, exact: bool):
    """(size, attributes, position, IoU) of the candidate size whose projection best overlaps
    `box`, with that overlap (the best over the candidate's trial yaws).

    The ray hit is where the box's bottom-centre ray meets the support plane - the bottom of the
    object's *silhouette*, which is not its footprint's front edge: a sphere's lowest image point
    is a tangent ray that lands only r tan(elevation / 2) before its contact point, a turned
    cube's is its nearest corner. So for each candidate (size, and a few yaws, the yaw being
    unknown) the object is placed such that its own projected silhouette (`_silhouette_points`)
    has the box's bottom centre, by a fixed-point iteration on the ground (a ground shift moves
    that image point by about the same shift seen from the camera), starting from the hit pushed
    back by half the footprint. exact=False (the hit is a bound, not the box's bottom ray: see
    `_support_point`): the pushed-back hit is kept.
    """
    unit = _silhouette_points(mesh)
    sizes = np.array([s for s, _ in candidates for _ in _FIT_YAWS], dtype=np.float64)
    yaws = np.array([y for _ in candidates for y in _FIT_YAWS])
    ground_dir = hit[:2] - np.asarray(cam.position[:2])
    ground_dir = ground_dir / max(np.linalg.norm(ground_dir), 1e-9)
    pos = np.repeat(hit[None].astype(np.float64), len(sizes), axis=0)
    pos[:, :2] += ground_dir * (np.minimum(sizes[:, 0], sizes[:, 1]) / 2)[:, None]
    if exact:
        for _ in range(4):
            b = _projected_boxes(cam, pos, sizes, yaws, unit)
            seen = cam.plane_points(np.stack([(b[:, 0] + b[:, 2]) / 2, b[:, 3]], axis=1), hit[2])
            shift = hit[None, :2] - seen[:, :2]
            # No update where the image bottom cuts the silhouette (no information there) or a ray misses.
            ok = np.isfinite(shift).all(1) & (b[:, 3] < cam.height - 0.5)
            pos[ok, :2] += shift[ok]
    score = _iou(_projected_boxes(cam, pos, sizes, yaws, unit), np.asarray(box, np.float64))
    c = int(np.argmax(score)) // len(_FIT_YAWS)
    # The position: the best yaw's of the best size (the yaw itself is drawn later, from the rules).
    best = c * len(_FIT_YAWS) + int(np.argmax(score[c * len(_FIT_YAWS):(c + 1) * len(_FIT_YAWS)]))
    size, attrs = candidates[c]
    return size, attrs, pos[best], float(score[best])


def lift_graph(pred: nx.MultiDiGraph, env: Environment, camera: Camera, rng: np.random.Generator,
               score_threshold: float = 0.5, min_fit_iou: float = 0.3) -> nx.MultiDiGraph:
    """A 3D scene graph for `env` from predicted graph `pred` (objects need `box`; `score` below
    `score_threshold` are dropped). `camera` is the known camera of the target images (its size
    must match the boxes' pixel frame). Boxes that cannot be lifted (above the horizon) are dropped,
    and so are objects of "area" placement lifted far outside the environment's area (`_within_reach`),
    and boxes that no object of the class (any prior size, any trial yaw) standing where the box's
    bottom puts it projects onto: best box IoU below `min_fit_iou` (0 keeps every box).

    Why the fit gate: a detection whose box shape or size fits no object of its class at that
    distance is a false positive (a ground tile read as a cube, a box spanning two objects) or
    so occluded that its bottom edge is not the object's, and lifted it would be an object in the
    wrong place. Lifting the true visible boxes of rendered target scenes, the best IoU is below
    0.3 for 1.2% of clevr, 0% of dining and 4.6% of driving objects (benchmarks/RESULTS.md).
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
        z = 0.0
        if spec.placement == "sidewalk" and context["kind"] == "road":
            z = context["curb_height"]
        anchors = [b for _, b in lifted if b["category"] == spec.anchor] if spec.placement == "on" else []
        if spec.placement == "on":
            if not anchors:
                continue
            z = float(np.mean([b["position"][2] + b["size"][2] for b in anchors]))
        candidates = _candidate_sizes(spec, env)
        support = _support_point(camera, a["box"], z, max(size[2] for size, _ in candidates),
                                 max(math.hypot(size[0], size[1]) for size, _ in candidates))
        if support is None:
            continue
        hit = _clamp_ahead(support[0], camera, spec, context)
        exact = support[1] and bool(np.array_equal(hit, support[0]))
        size, attrs, pos, fit_iou = _fit(camera, hit, a["box"], candidates, spec.mesh, exact)
        if fit_iou < min_fit_iou:
            continue
        if spec.placement == "on":
            sup = min(anchors, key=lambda b: math.dist(b["position"][:2], pos[:2]))
            pos[2] = sup["position"][2] + sup["size"][2]
        if spec.placement == "area" and not _within_reach(pos, env.area):
            continue
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


def _within_reach(pos, area, slack: float = 0.5) -> bool:
    """Whether ground point pos (m) lies in the environment's placement `area` (x_min, x_max,
    y_min, y_max) widened on each side by `slack` times its half-extent. A target's scenes may
    reach somewhat beyond the source's area (clevr-target: 3.5 m against 3 m), but a detection
    lifted far outside it is, with a steep camera whose image top sees the ground 20 m away,
    nearly always a false positive on background texture (tiles read as cubes): lifted, it
    would put an object where the target has none (and teach the detector that texture)."""
    x0, x1, y0, y1 = area
    sx, sy = slack * (x1 - x0) / 2, slack * (y1 - y0) / 2
    return x0 - sx <= pos[0] <= x1 + sx and y0 - sy <= pos[1] <= y1 + sy


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
            return facing_yaw(np.asarray(near["position"][:2]) - pos[:2]) + jitter
    return jitter
