"""Structured domain randomization (SDR): sample scene graphs from an environment.

Scene i of a run with seed S is sampled from `numpy.random.SeedSequence(S, spawn_key=(i,))`,
the i-th child of `SeedSequence(S).spawn(n)` for any n, so each scene can be made alone, in any
order or in parallel, with the same result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import networkx as nx
import numpy as np

from sim2sg.checks import focal_px
from sim2sg.errors import InputError
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera
from sim2sg.scene.environment import CategorySpec, Environment
from sim2sg.scene.relations import derive_relations


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene `index` in a run with `seed`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def sample_scenes(env: Environment, seed: int, count: int, start: int = 0) -> Iterator[nx.MultiDiGraph]:
    """Scenes start .. start + count - 1 of the run with `seed`."""
    for i in range(start, start + count):
        yield sample_scene(env, scene_rng(seed, i))


def _uniform(rng: np.random.Generator, r) -> float:
    lo, hi = r
    return float(lo) if hi == lo else float(rng.uniform(lo, hi))


def _vec_jitter(rng: np.random.Generator, base, half) -> np.ndarray:
    half = np.asarray(half, dtype=np.float64)
    return np.asarray(base, dtype=np.float64) + rng.uniform(-1.0, 1.0, 3) * half


def sample_context(env: Environment, rng: np.random.Generator) -> dict:
    """The scene's context layout (JSON-ready): ground, room or road (lanes, sidewalks, curb)."""
    ctx = env.context
    kind = ctx["kind"]
    out: dict = {"kind": kind, "extent": float(ctx.get("extent", 40.0))}
    if kind == "room":
        out["wall_height"] = float(ctx.get("wall_height", 3.0))
    elif kind == "road":
        road = ctx["road"]
        lo, hi = road["lanes"]
        out.update(
            lanes=int(rng.integers(lo, hi + 1)),
            lane_width=_uniform(rng, road["lane_width"]),
            sidewalk_width=_uniform(rng, road["sidewalk_width"]),
            curb_height=_uniform(rng, road.get("curb_height", [0.15, 0.15])),
        )
    return out


def road_geometry(context: dict) -> dict:
    """Derived road quantities (meters): half road width, lane centres (x, left to right), the
    travel direction of each lane (+1 along +Y, -1 along -Y; traffic keeps right), the ego lane."""
    n, lw = context["lanes"], context["lane_width"]
    half = n * lw / 2
    centres = [-half + (k + 0.5) * lw for k in range(n)]
    dirs = [1 if c >= 0 else -1 for c in centres]
    return {"half_width": half, "centres": centres, "directions": dirs, "ego_lane": n - 1}


def sample_camera(env: Environment, context: dict, rng: np.random.Generator) -> Camera:
    """The scene's camera: the environment's, its position and look-at point jittered."""
    spec = env.camera
    pos = _vec_jitter(rng, spec.position, spec.position_jitter)
    at = _vec_jitter(rng, spec.look_at, spec.look_at_jitter)
    return _camera(env, context, pos, at)


def nominal_camera(env: Environment, context: dict) -> Camera:
    """The environment's camera without jitter (the loop's known target camera), at the
    environment's image size; a road context places it over the ego lane as `sample_camera` does."""
    spec = env.camera
    return _camera(env, context, np.asarray(spec.position, dtype=np.float64), np.asarray(spec.look_at, dtype=np.float64))


def _camera(env: Environment, context: dict, pos: np.ndarray, at: np.ndarray) -> Camera:
    spec = env.camera
    pos, at = pos.copy(), at.copy()
    if spec.follow_lane and context["kind"] == "road":
        geo = road_geometry(context)
        x = geo["centres"][geo["ego_lane"]]
        pos[0] += x
        at[0] += x
    fx = focal_px(spec.hfov_deg, spec.width)
    return Camera(
        width=spec.width, height=spec.height, fx=fx, fy=fx,
        cx=spec.width / 2 + spec.principal_offset[0], cy=spec.height / 2 + spec.principal_offset[1],
        position=tuple(pos.tolist()), look_at=tuple(at.tolist()), near=spec.near, far=spec.far,
    )


def _object_counts(env: Environment, rng: np.random.Generator) -> list[str]:
    """The categories of the scene's objects in placement order."""
    order: list[str] = []
    if env.total is not None:
        free = [c for c in env.categories if env.spec(c).count is None]
        w = np.array([env.spec(c).weight for c in free], dtype=np.float64)
        n = int(rng.integers(env.total[0], env.total[1] + 1))
        order += [free[k] for k in rng.choice(len(free), size=n, p=w / w.sum())]
    for c in env.categories:
        cnt = env.spec(c).count
        if cnt is not None:
            order += [c] * int(rng.integers(cnt[0], cnt[1] + 1))
    if env.total is not None:
        # Anchors must come first: keep the category order for anchored classes only.
        rank = {c: (i if env.spec(c).placement in ("around", "on") or any(
            env.spec(o).anchor == c for o in env.categories) else -1) for i, c in enumerate(env.categories)}
        order = sorted(order, key=lambda c: rank[c])  # stable: random order among free classes
    return order


def _size(spec: CategorySpec, env: Environment, rng: np.random.Generator) -> tuple[tuple[float, ...], dict]:
    if spec.base_size is not None:
        name = spec.scales[int(rng.integers(len(spec.scales)))]
        r = env.sizes[name]
        return tuple(b * r for b in spec.base_size), {"size": name}
    lo, hi = np.asarray(spec.size_min), np.asarray(spec.size_max)
    t = np.full(3, rng.uniform()) if spec.uniform_scale else rng.uniform(0, 1, 3)
    return tuple((lo + t * (hi - lo)).tolist()), {}


def _half_extent_x(size, yaw_deg: float) -> float:
    c, s = abs(math.cos(math.radians(yaw_deg))), abs(math.sin(math.radians(yaw_deg)))
    return c * size[0] / 2 + s * size[1] / 2


def facing_yaw(direction_xy) -> float:
    """Yaw (deg) that turns an object's front (local -Y) towards `direction_xy`."""
    return math.degrees(math.atan2(direction_xy[0], -direction_xy[1]))


class _Placed:
    """Objects placed so far: ids, attributes, support (anchor id or None)."""

    def __init__(self):
        self.items: list[tuple[int, dict, int | None]] = []

    def of(self, category: str) -> list[tuple[int, dict]]:
        return [(i, a) for i, a, _ in self.items if a["category"] == category]


def _propose(spec: CategorySpec, size, env: Environment, context: dict, placed: _Placed,
             rng: np.random.Generator) -> tuple[tuple[float, float, float], float, int | None, int | None] | None:
    """(position, yaw, support id, anchor id) for one attempt, or None if impossible (no anchor,
    no room). The support is the object it stands on (None: the ground)."""
    jitter = _uniform(rng, spec.yaw)
    placement = spec.placement
    if len(spec.placements) > 1:
        w = np.asarray(spec.placement_weights, dtype=np.float64)
        placement = spec.placements[int(rng.choice(len(w), p=w / w.sum()))]
    if placement == "area":
        x0, x1, y0, y1 = env.area
        return (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)), 0.0), jitter, None, None
    if placement in ("around", "on"):
        anchors = placed.of(spec.anchor)
        if not anchors:
            return None
        a_id, a = anchors[int(rng.integers(len(anchors)))]
        ay = math.radians(a["yaw"])
        rot = np.array([[math.cos(ay), -math.sin(ay)], [math.sin(ay), math.cos(ay)]])
        asx, asy, asz = a["size"]
        if placement == "on":
            r = max(size[0], size[1]) / 2
            hx, hy = asx / 2 - r, asy / 2 - r
            if hx < 0 or hy < 0:
                return None
            local = np.array([rng.uniform(-hx, hx), rng.uniform(-hy, hy)])
            xy = np.asarray(a["position"][:2]) + rot @ local
            return (float(xy[0]), float(xy[1]), a["position"][2] + asz), a["yaw"] + jitter, a_id, a_id
        side = int(rng.integers(4))
        normal = [np.array([1.0, 0.0]), np.array([-1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, -1.0])][side]
        tangent = np.array([-normal[1], normal[0]])
        half_n = asx / 2 if side < 2 else asy / 2
        half_t = asy / 2 if side < 2 else asx / 2
        local = normal * (half_n + _uniform(rng, spec.distance) + size[1] / 2) + tangent * rng.uniform(-0.8, 0.8) * half_t
        xy = np.asarray(a["position"][:2]) + rot @ local
        base = facing_yaw(rot @ -normal) if spec.face_anchor else 0.0
        return (float(xy[0]), float(xy[1]), 0.0), base + jitter, None, a_id
    # Road placements: the road runs along +Y from the camera; side +1 is right (x > 0).
    geo = road_geometry(context)
    cam_y = 0.0
    y = cam_y + _uniform(rng, spec.depth)
    if placement == "lane":
        k = int(rng.integers(len(geo["centres"])))
        x = geo["centres"][k] + _uniform(rng, spec.distance)
        base = (180.0 if geo["directions"][k] > 0 else 0.0) if spec.lane_yaw else 0.0
        return (x, y, 0.0), base + jitter, None, None
    s = {"right": 1.0, "left": -1.0}.get(spec.sides) or (1.0 if rng.uniform() < 0.5 else -1.0)
    if placement == "curb":
        # Parked along the kerb of side s, heading with that side's traffic.
        yaw = (180.0 if s > 0 else 0.0) + jitter
        gap = _uniform(rng, spec.distance)
        return (s * (geo["half_width"] - _half_extent_x(size, yaw) - gap), y, 0.0), yaw, None, None
    yaw = -90.0 * s + jitter
    hx = _half_extent_x(size, yaw)
    sw = context["sidewalk_width"]
    if placement == "sidewalk":
        lo, hi = geo["half_width"] + hx, geo["half_width"] + sw - hx
        if hi < lo:
            return None
        return (s * float(rng.uniform(lo, hi)), y, context["curb_height"]), yaw, None, None
    x = geo["half_width"] + sw + _uniform(rng, spec.distance) + hx
    return (s * x, y, 0.0), yaw, None, None


def _fits(pos, size, support, env: Environment, placed: _Placed, dirs: dict, anchor_ok: int | None) -> bool:
    """CLEVR's rules among objects on the same support: min_dist between footprint circles and the
    margin along the four camera directions."""
    if env.min_dist is None and env.margin is None:
        return True
    r = max(size[0], size[1]) / 2
    for oid, a, sup in placed.items:
        if sup != support or oid == anchor_ok:
            continue
        dx, dy = pos[0] - a["position"][0], pos[1] - a["position"][1]
        rr = max(a["size"][0], a["size"][1]) / 2
        if env.min_dist is not None and math.hypot(dx, dy) - r - rr < env.min_dist:
            return False
        if env.margin is not None:
            for d in dirs.values():
                m = dx * d[0] + dy * d[1]
                if 0 < m < env.margin:
                    return False
    return True


_REDRAWS = 4  # object lists tried per scene (each with env.max_restarts placements)


def _place(env: Environment, cats: list[str], context: dict, dirs: dict, rng: np.random.Generator) -> "_Placed | None":
    """Place the objects `cats` (in order) with up to `env.max_restarts` restarts of the whole
    scene (CLEVR's rule: an object with no room after `max_attempts` proposals restarts it);
    None when no restart fits them all."""
    for _ in range(env.max_restarts):
        placed = _Placed()
        ok = True
        for cat in cats:
            spec = env.spec(cat)
            size, attrs = _size(spec, env, rng)
            for _ in range(env.max_attempts):
                prop = _propose(spec, size, env, context, placed, rng)
                if prop is None:
                    break
                pos, yaw, support, anchor = prop
                # A chair may touch its own table; it must keep clear of everything else.
                if _fits(pos, size, support, env, placed, dirs, anchor):
                    color = spec.colors[int(rng.integers(len(spec.colors)))]
                    attrs = {"color": color, **attrs}
                    node = {
                        "category": cat, "position": tuple(float(v) for v in pos),
                        "yaw": float(yaw % 360.0), "size": tuple(float(v) for v in size),
                        "color": env.palette[color],
                        "material": spec.materials[int(rng.integers(len(spec.materials)))],
                        "texture": spec.textures[int(rng.integers(len(spec.textures)))],
                        "attributes": attrs,
                    }
                    placed.items.append((len(placed.items), node, support))
                    break
            else:
                ok = False  # no room for this object: restart the scene, as CLEVR does
                break
        if ok:
            return placed
    return None


def sample_scene(env: Environment, rng: np.random.Generator) -> nx.MultiDiGraph:
    """One scene graph: context, camera, objects with placement and appearance, derived relations."""
    context = sample_context(env, rng)
    camera = sample_camera(env, context, rng)
    dirs = camera.ground_directions()
    # The object list is drawn once and kept across restarts (as CLEVR does), so crowded scenes
    # are not under-represented. A list that still does not fit after `max_restarts` is redrawn
    # (a few times) before giving up: with per-class counts one rare draw can be infeasible in a
    # crowded environment (driving-target: about 1 scene in 1,000), which must not abort a
    # 1,000-scene job; an environment that cannot place its typical scenes still fails.
    for _ in range(_REDRAWS):
        cats = _object_counts(env, rng)
        placed = _place(env, cats, context, dirs, rng)
        if placed is not None:
            break
    else:
        raise InputError(env.source, "placement",
                         f"could not place the objects after {env.max_restarts} restarts of {_REDRAWS} object lists; "
                         "loosen min_dist/margin, enlarge the area or lower the counts")
    g = sg.new_graph(env.name, camera, context)
    for oid, a, _ in placed.items:
        sg.add_object(g, oid, a["category"], a["position"], a["yaw"], a["size"], color=a["color"],
                      material=a["material"], texture=a["texture"], attributes=a["attributes"])
    for s, p, o in derive_relations(sg.objects(g), camera, env.predicates, env.relation_threshold,
                                    env.on_tolerance, env.require_category):
        sg.add_relation(g, s, p, o)
    return g
