"""Meshes: object assets described as data (assets/objects/*.toml), built from primitive parts.

Object frame: the object's bounding box is x, y in [-0.5, 0.5], z in [0, 1]; a scene-graph object
scales it by its `size` (meters), turns it by `yaw` about +Z and moves its bottom centre to
`position`. By convention an object's front faces local -Y.

An asset file lists parts; each part is a unit primitive (box, cylinder, sphere, cone, wedge: all
inside [-0.5, 0.5]^3, axes along z) scaled by `size`, rotated by `rotate` (degrees about x, then y,
then z) and moved to `center`, all in the object frame.
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass

import numpy as np

from sim2sg._data import data_dir
from sim2sg.errors import InputError

SHAPES = ("box", "cylinder", "sphere", "cone", "wedge")


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh with per-vertex attributes (hard edges use duplicated vertices).

    points: (V, 3) float32; faces: (F, 3) int32 counter-clockwise seen from outside;
    uv: (V, 2) float32 texture coordinates; normals: (V, 3) float32 unit normals.
    """

    points: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    normals: np.ndarray

    def extent(self) -> np.ndarray:
        """(2, 3) min and max corner."""
        return np.stack([self.points.min(0), self.points.max(0)])


def _mesh(points, faces, uv, normals) -> Mesh:
    n = np.asarray(normals, dtype=np.float64)
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return Mesh(np.asarray(points, np.float32), np.asarray(faces, np.int32),
                np.asarray(uv, np.float32), n.astype(np.float32))


def concat(meshes: list[Mesh]) -> Mesh:
    offs = np.cumsum([0] + [len(m.points) for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.points for m in meshes]),
        np.concatenate([m.faces + o for m, o in zip(meshes, offs)]).astype(np.int32),
        np.concatenate([m.uv for m in meshes]),
        np.concatenate([m.normals for m in meshes]),
    )


# ---- unit primitives (inside [-0.5, 0.5]^3) ------------------------------------------------------
def unit_box() -> Mesh:
    pts, uvs, nrm, faces = [], [], [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            a, b = [i for i in range(3) if i != axis]
            # (a, b, n) right-handed for sign > 0; swap the winding for sign < 0.
            corners = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
            base = len(pts)
            for ca, cb in corners:
                p = np.zeros(3)
                p[axis], p[a], p[b] = 0.5 * sign, ca, cb
                pts.append(p)
                uvs.append((ca + 0.5, cb + 0.5))
                nrm.append(n)
            tri = [(0, 1, 2), (0, 2, 3)]
            ccw = np.dot(np.cross(np.eye(3)[a], np.eye(3)[b]), n) > 0
            for t in tri:
                faces.append([base + i for i in (t if ccw else t[::-1])])
    return _mesh(pts, faces, uvs, nrm)


def unit_cylinder(segments: int = 24) -> Mesh:
    th = np.linspace(0, 2 * np.pi, segments + 1)
    c, s = np.cos(th), np.sin(th)
    side_p = np.concatenate([np.stack([0.5 * c, 0.5 * s, np.full_like(c, z)], 1) for z in (-0.5, 0.5)])
    side_n = np.concatenate([np.stack([c, s, np.zeros_like(c)], 1)] * 2)
    side_uv = np.concatenate([np.stack([th / (2 * np.pi), np.full_like(th, v)], 1) for v in (0.0, 1.0)])
    m = segments + 1
    side_f = []
    for i in range(segments):
        side_f += [[i, i + 1, m + i + 1], [i, m + i + 1, m + i]]
    meshes = [_mesh(side_p, side_f, side_uv, side_n)]
    for z, sign in ((-0.5, -1.0), (0.5, 1.0)):
        ring = np.stack([0.5 * c[:-1], 0.5 * s[:-1], np.full(segments, z)], 1)
        p = np.concatenate([[[0, 0, z]], ring])
        uv = np.concatenate([[[0.5, 0.5]], 0.5 + ring[:, :2]])
        f = [[0, 1 + i, 1 + (i + 1) % segments] for i in range(segments)]
        if sign < 0:
            f = [t[::-1] for t in f]
        meshes.append(_mesh(p, f, uv, np.tile([0, 0, sign], (len(p), 1))))
    return concat(meshes)


def unit_sphere(segments: int = 24, rings: int = 12) -> Mesh:
    th = np.linspace(0, 2 * np.pi, segments + 1)
    ph = np.linspace(0, np.pi, rings + 1)
    T, P = np.meshgrid(th, ph)
    n = np.stack([np.sin(P) * np.cos(T), np.sin(P) * np.sin(T), -np.cos(P)], -1).reshape(-1, 3)
    uv = np.stack([T / (2 * np.pi), P / np.pi], -1).reshape(-1, 2)
    faces = []
    m = segments + 1
    for r in range(rings):
        for i in range(segments):
            a, b = r * m + i, r * m + i + 1
            c, d = a + m, b + m
            if r > 0:
                faces.append([a, b, d])
            if r < rings - 1:
                faces.append([a, d, c])
    return _mesh(0.5 * n, faces, uv, n)


def unit_cone(segments: int = 24) -> Mesh:
    th = np.linspace(0, 2 * np.pi, segments + 1)
    c, s = np.cos(th), np.sin(th)
    # Slanted side normals of a cone with radius 0.5, height 1: (cos, sin, 0.5) normalised.
    base = np.stack([0.5 * c, 0.5 * s, np.full_like(c, -0.5)], 1)
    apex = np.tile([0.0, 0.0, 0.5], (segments + 1, 1))
    p = np.concatenate([base, apex])
    n = np.concatenate([np.stack([c, s, np.full_like(c, 0.5)], 1)] * 2)
    uv = np.concatenate([np.stack([th / (2 * np.pi), np.zeros_like(th)], 1),
                         np.stack([th / (2 * np.pi), np.ones_like(th)], 1)])
    m = segments + 1
    f = [[i, i + 1, m + i] for i in range(segments)]
    side = _mesh(p, f, uv, n)
    ring = base[:-1]
    cp = np.concatenate([[[0, 0, -0.5]], ring])
    cf = [[0, 1 + (i + 1) % segments, 1 + i] for i in range(segments)]
    cap = _mesh(cp, cf, np.concatenate([[[0.5, 0.5]], 0.5 + ring[:, :2]]), np.tile([0, 0, -1.0], (len(cp), 1)))
    return concat([side, cap])


def capsule(radius: float, height: float, segments: int = 24, rings: int = 12) -> Mesh:
    """A capsule about +Z centred at the origin: a cylinder of `radius` and `height` (meters)
    capped by two hemispheres, so its total length is height + 2 * radius. rings: latitude steps
    from pole to pole (even; half per hemisphere). Not a unit primitive: its caps stay round only
    when it is built at its real size."""
    half = max(2, rings // 2)
    lat = np.concatenate([np.linspace(-np.pi / 2, 0.0, half + 1), np.linspace(0.0, np.pi / 2, half + 1)])
    z0 = np.concatenate([np.full(half + 1, -height / 2), np.full(half + 1, height / 2)])
    th = np.linspace(0, 2 * np.pi, segments + 1)
    L, T = np.meshgrid(lat, th, indexing="ij")
    n = np.stack([np.cos(L) * np.cos(T), np.cos(L) * np.sin(T), np.sin(L)], -1)
    p = radius * n + np.stack([np.zeros_like(L), np.zeros_like(L), np.broadcast_to(z0[:, None], L.shape)], -1)
    v = (p[..., 2] + height / 2 + radius) / max(height + 2 * radius, 1e-12)
    uv = np.stack([T / (2 * np.pi), v], -1)
    m, rows = segments + 1, len(lat)
    faces = []
    for r in range(rows - 1):
        for i in range(segments):
            a, b = r * m + i, r * m + i + 1
            c, d = a + m, b + m
            if r > 0:  # row 0 is the bottom pole: skip the zero-area triangle there
                faces.append([a, b, d])
            if r < rows - 2:
                faces.append([a, d, c])
    return _mesh(p.reshape(-1, 3), faces, uv.reshape(-1, 2), n.reshape(-1, 3))


def unit_wedge() -> Mesh:
    """A triangular prism along x (a gable roof): cross-section (-0.5,-0.5), (0.5,-0.5), (0,0.5) in y-z."""
    tri = np.array([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5]])  # (y, z)
    meshes = []
    for x, sign in ((-0.5, -1.0), (0.5, 1.0)):
        p = np.stack([np.full(3, x), tri[:, 0], tri[:, 1]], 1)
        f = [[0, 1, 2]] if sign > 0 else [[0, 2, 1]]
        meshes.append(_mesh(p, f, tri + 0.5, np.tile([sign, 0, 0], (3, 1))))
    for i in range(3):
        a, b = tri[i], tri[(i + 1) % 3]
        edge = b - a
        n = np.array([0.0, edge[1], -edge[0]])  # outward for the ccw (y, z) polygon
        p = np.array([[-0.5, a[0], a[1]], [0.5, a[0], a[1]], [0.5, b[0], b[1]], [-0.5, b[0], b[1]]])
        uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
        f = [[0, 2, 1], [0, 3, 2]]
        meshes.append(_mesh(p, f, uv, np.tile(n, (4, 1))))
    return concat(meshes)


_PRIMITIVES = {"box": unit_box, "cylinder": unit_cylinder, "sphere": unit_sphere, "cone": unit_cone,
               "wedge": unit_wedge}


def rotation_xyz(deg: tuple[float, float, float]) -> np.ndarray:
    """(3, 3) rotation: about x, then y, then z (degrees, right-handed)."""
    rx, ry, rz = (math.radians(a) for a in deg)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def transform(mesh: Mesh, size, rotate, center) -> Mesh:
    """Scale by `size`, rotate by `rotate` (deg xyz), translate to `center`."""
    size = np.asarray(size, np.float64)
    r = rotation_xyz(rotate)
    p = (mesh.points * size) @ r.T + np.asarray(center)
    n = (mesh.normals / size) @ r.T  # normals transform by the inverse transpose
    return _mesh(p, mesh.faces, mesh.uv, n)


def primitive(shape: str, segments: int = 24) -> Mesh:
    if shape in ("cylinder", "cone"):
        return _PRIMITIVES[shape](segments)
    if shape == "sphere":
        return unit_sphere(segments, max(4, segments // 2))
    return _PRIMITIVES[shape]()


# ---- object assets --------------------------------------------------------------------------------
def asset_names() -> list[str]:
    return sorted(p.stem for p in (data_dir("assets") / "objects").glob("*.toml"))


@functools.lru_cache(maxsize=None)
def object_mesh(name: str) -> Mesh:
    """The unit-box-frame mesh of object asset `name` (assets/objects/<name>.toml); cached."""
    entry = data_dir("assets") / "objects" / f"{name}.toml"
    source = f"assets/objects/{name}.toml"
    if not entry.is_file():
        raise InputError(source, "", f"unknown mesh asset {name!r} (known: {', '.join(asset_names())})")
    try:
        raw = tomllib.loads(entry.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(source, "", f"not valid TOML: {e}") from None
    return build_object(raw, source)


def build_object(raw: dict, source: str = "<asset>") -> Mesh:
    parts = raw.get("parts")
    if not isinstance(parts, list) or not parts:
        raise InputError(source, "parts", "needs at least one [[parts]] entry")
    segments = raw.get("segments", 24)
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 3:
        raise InputError(source, "segments", "expected an integer >= 3")
    meshes = []
    for i, part in enumerate(parts):
        f = f"parts[{i}]"
        shape = part.get("shape")
        if shape not in SHAPES:
            raise InputError(source, f"{f}.shape", f"expected one of {', '.join(SHAPES)}, got {shape!r}")
        vals = {}
        for key, default in (("center", None), ("size", None), ("rotate", [0, 0, 0])):
            v = part.get(key, default)
            if (not isinstance(v, list) or len(v) != 3
                    or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v)):
                raise InputError(source, f"{f}.{key}", "expected a list of 3 numbers")
            vals[key] = [float(c) for c in v]
        if min(vals["size"]) <= 0:
            raise InputError(source, f"{f}.size", "must be positive")
        meshes.append(transform(primitive(shape, segments), vals["size"], vals["rotate"], vals["center"]))
    return concat(meshes)


# ---- context meshes -------------------------------------------------------------------------------
def quad(x0: float, x1: float, y0: float, y1: float, z: float, uv_scale: float = 1.0) -> Mesh:
    """An upward-facing rectangle at height z (meters); uv repeats every 1 / uv_scale meters."""
    p = [[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]
    uv = [[x * uv_scale, y * uv_scale] for x, y, _ in p]
    return _mesh(p, [[0, 1, 2], [0, 2, 3]], uv, np.tile([0, 0, 1.0], (4, 1)))


def wall(p0, p1, z0: float, z1: float, uv_scale: float = 1.0) -> Mesh:
    """A vertical rectangle from ground point p0 to p1 (x, y), between heights z0 and z1; its
    front (normal) faces the left of the direction p0 -> p1."""
    (x0, y0), (x1, y1) = p0, p1
    d = np.array([x1 - x0, y1 - y0])
    length = float(np.linalg.norm(d))
    n = np.array([-d[1], d[0], 0.0]) / length
    p = [[x0, y0, z0], [x1, y1, z0], [x1, y1, z1], [x0, y0, z1]]
    uv = [[0, z0 * uv_scale], [length * uv_scale, z0 * uv_scale], [length * uv_scale, z1 * uv_scale], [0, z1 * uv_scale]]
    # (0, 1, 2) would face right of p0 -> p1; reversed, it faces the normal's side.
    return _mesh(p, [[0, 2, 1], [0, 3, 2]], uv, np.tile(n, (4, 1)))


def slab(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, uv_scale: float = 1.0) -> Mesh:
    """An axis-aligned box (e.g. a sidewalk) with world-scaled UVs."""
    m = transform(unit_box(), [x1 - x0, y1 - y0, z1 - z0], [0, 0, 0],
                  [(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2])
    return Mesh(m.points, m.faces, (m.uv * np.array([x1 - x0, y1 - y0]) * uv_scale).astype(np.float32), m.normals)


# Mesh UV units per meter of the context surfaces, by (context kind, surface role): a Surface's
# `uv_scale` multiplies these (`sim2sg.loop.target_look` sizes its ground patches with them).
_CONTEXT_UV = {("ground", "ground"): 0.25, ("room", "ground"): 0.5, ("room", "wall"): 0.5,
               ("road", "ground"): 0.25, ("road", "road"): 0.25, ("road", "sidewalk"): 0.5}


def context_uv_scale(kind: str, role: str) -> float:
    """UV units per meter of the `role` surface of a `kind` context (see `context_meshes`)."""
    return _CONTEXT_UV[(kind, role)]


def context_meshes(context: dict) -> list[tuple[str, str, Mesh]]:
    """World-space context geometry for a graph's `context`: [(prim name, surface role, mesh)].

    ground: one ground plane. room: floor plus back/left/right walls. road: grass below the road
    surface (z = 0), sidewalk slabs up to the curb height, and dashed lane markings; the road runs
    along +Y (see `sim2sg.scene.sdr.road_geometry`).
    """
    kind, e = context["kind"], float(context.get("extent", 40.0))
    if kind == "ground":
        return [("Ground", "ground", quad(-e, e, -e, e, 0.0, uv_scale=_CONTEXT_UV[("ground", "ground")]))]
    if kind == "room":
        h = float(context.get("wall_height", 3.0))
        return [
            ("Floor", "ground", quad(-e, e, -e, e, 0.0, uv_scale=_CONTEXT_UV[("room", "ground")])),
            ("BackWall", "wall", wall((e, e), (-e, e), 0.0, h, uv_scale=_CONTEXT_UV[("room", "wall")])),
            ("LeftWall", "wall", wall((-e, e), (-e, -e), 0.0, h, uv_scale=_CONTEXT_UV[("room", "wall")])),
            ("RightWall", "wall", wall((e, -e), (e, e), 0.0, h, uv_scale=_CONTEXT_UV[("room", "wall")])),
        ]
    n, lw, sw = context["lanes"], context["lane_width"], context["sidewalk_width"]
    curb = context["curb_height"]
    half = n * lw / 2
    y0, y1 = -20.0, e
    side_uv = _CONTEXT_UV[("road", "sidewalk")]
    out = [
        ("Ground", "ground", quad(-e, e, y0, y1, -0.02, uv_scale=_CONTEXT_UV[("road", "ground")])),
        ("Road", "road", quad(-half, half, y0, y1, 0.0, uv_scale=_CONTEXT_UV[("road", "road")])),
        ("SidewalkRight", "sidewalk", slab(half, half + sw, y0, y1, -0.02, curb, uv_scale=side_uv)),
        ("SidewalkLeft", "sidewalk", slab(-half - sw, -half, y0, y1, -0.02, curb, uv_scale=side_uv)),
    ]
    dashes = []
    for k in range(1, n):
        x = -half + k * lw
        w = 0.12 if k != n // 2 or n % 2 else 0.2  # a wider centre line between the directions
        for y in np.arange(y0, y1, 9.0):
            dashes.append(quad(x - w / 2, x + w / 2, float(y), float(y) + 3.0, 0.005))
    if dashes:
        out.append(("LaneMarkings", "marking", concat(dashes)))
    return out
