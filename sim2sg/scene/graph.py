"""Scene graphs: a networkx MultiDiGraph plus a versioned JSON file format.

A scene graph is a plain `networkx.MultiDiGraph` (no subclass):

- ``G.graph``: ``env`` (environment name), ``camera`` (`sim2sg.scene.camera.Camera`), ``context``
  (a JSON object describing the scene's context: ground, road layout, ...; environment-specific).
- Node ``id`` (int >= 0) with attributes:
  ``category`` (str), ``position`` (x, y, z) world meters of the centre of the object's bottom face
  (z = 0 on the ground, the support's top for an object on another), ``yaw`` (degrees about +Z,
  counter-clockwise seen from above), ``size`` (sx, sy, sz) full extents in meters along the
  object's local x, y, z, ``color`` (r, g, b) sRGB in [0, 1] or None, ``material`` (str or None),
  ``texture`` (texture family or None), ``attributes`` (dict of extra named values, e.g. CLEVR's
  ``{"color": "red", "size": "large"}``), ``box`` ([x1, y1, x2, y2] pixels or None), ``score``
  (detection confidence in [0, 1] or None). None means "not fixed by the graph": graph2usd
  randomizes it from the environment.
- Edge ``subject -> object`` with key = predicate: the triplet reads "subject is <predicate> of
  object". A MultiDiGraph holds several predicates per ordered pair (CLEVR pairs are often both
  ``left`` and ``front``).

File format (JSON, ``version`` 1)::

    {"format": "sim2sg-scene-graph", "version": 1, "env": "clevr",
     "camera": {"width": 480, "height": 320, "fx": ..., "fy": ..., "cx": ..., "cy": ...,
                "position": [x, y, z], "look_at": [x, y, z], "near": 0.1, "far": 100.0},
     "context": {...},
     "objects": [{"id": 0, "category": "cube", "position": [x, y, z], "yaw": 30.0,
                  "size": [sx, sy, sz], "color": [r, g, b], "material": "rubber",
                  "texture": "plain", "attributes": {}, "box": null, "score": null}],
     "relationships": [{"subject": 1, "predicate": "left", "object": 0}]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx

from sim2sg import atomic
from sim2sg.checks import MAX_IMAGE_SIDE, Checker, focal_problem, parse_json, read_json
from sim2sg.errors import InputError
from sim2sg.scene.camera import Camera
from sim2sg.scene.schema import CONTEXT_KINDS
from sim2sg.scene.textures import FAMILIES

FORMAT = "sim2sg-scene-graph"
VERSION = 1

_OBJECT_FIELDS = {
    "id", "category", "position", "yaw", "size", "color", "material", "texture", "attributes",
    "box", "score",
}
_REQUIRED_OBJECT_FIELDS = ("id", "category", "position", "yaw", "size")
_TOP_FIELDS = {"format", "version", "env", "camera", "context", "objects", "relationships"}
_CAMERA_FIELDS = ("width", "height", "fx", "fy", "cx", "cy", "position", "look_at")


# ---- building ---------------------------------------------------------------------------------
def new_graph(env: str, camera: Camera, context: dict | None = None) -> nx.MultiDiGraph:
    """An empty scene graph for environment `env` seen by `camera`."""
    g = nx.MultiDiGraph()
    g.graph.update(env=env, camera=camera, context=dict(context or {}))
    return g


def add_object(
    g: nx.MultiDiGraph,
    obj_id: int,
    category: str,
    position: Iterable[float],
    yaw: float,
    size: Iterable[float],
    *,
    color: Iterable[float] | None = None,
    material: str | None = None,
    texture: str | None = None,
    attributes: dict | None = None,
    box: Iterable[float] | None = None,
    score: float | None = None,
) -> None:
    """Add object node `obj_id` (see the module docstring for units and frames)."""
    g.add_node(
        int(obj_id),
        category=category,
        position=tuple(float(v) for v in position),
        yaw=float(yaw),
        size=tuple(float(v) for v in size),
        color=None if color is None else tuple(float(v) for v in color),
        material=material,
        texture=texture,
        attributes=dict(attributes or {}),
        box=None if box is None else tuple(float(v) for v in box),
        score=None if score is None else float(score),
    )


def add_relation(g: nx.MultiDiGraph, subject: int, predicate: str, obj: int) -> None:
    """Add the triplet (subject, predicate, object): "subject is <predicate> of object"."""
    g.add_edge(subject, obj, key=predicate)


def objects(g: nx.MultiDiGraph) -> list[tuple[int, dict]]:
    """[(id, attributes)] sorted by id."""
    return sorted(g.nodes(data=True), key=lambda t: t[0])


def relations(g: nx.MultiDiGraph) -> list[tuple[int, str, int]]:
    """Sorted [(subject, predicate, object)] triplets."""
    return sorted((s, p, o) for s, o, p in g.edges(keys=True))


def clear_relations(g: nx.MultiDiGraph) -> None:
    g.remove_edges_from(list(g.edges(keys=True)))


# ---- JSON -------------------------------------------------------------------------------------
def to_dict(g: nx.MultiDiGraph) -> dict:
    """The version-1 JSON object of `g` (objects by id, relationships sorted)."""
    objs = []
    for i, a in objects(g):
        objs.append({
            "id": i,
            "category": a["category"],
            "position": list(a["position"]),
            "yaw": a["yaw"],
            "size": list(a["size"]),
            "color": None if a.get("color") is None else list(a["color"]),
            "material": a.get("material"),
            "texture": a.get("texture"),
            "attributes": dict(a.get("attributes") or {}),
            "box": None if a.get("box") is None else list(a["box"]),
            "score": a.get("score"),
        })
    return {
        "format": FORMAT,
        "version": VERSION,
        "env": g.graph["env"],
        "camera": g.graph["camera"].to_dict(),
        "context": g.graph.get("context", {}),
        "objects": objs,
        "relationships": [{"subject": s, "predicate": p, "object": o} for s, p, o in relations(g)],
    }


def to_json(g: nx.MultiDiGraph) -> str:
    """Deterministic JSON text of `g` (same graph, same bytes): one line per object and relation."""
    d = to_dict(g)

    def one(x) -> str:
        return json.dumps(x, allow_nan=False, separators=(", ", ": "))

    lines = ["{"]
    for key in ("format", "version", "env", "camera", "context"):
        lines.append(f" {one(key)}: {one(d[key])},")
    for key, end in (("objects", ","), ("relationships", "")):
        items = d[key]
        if not items:
            lines.append(f" {one(key)}: []{end}")
            continue
        lines.append(f" {one(key)}: [")
        lines += [f"  {one(x)}" + ("," if k < len(items) - 1 else "") for k, x in enumerate(items)]
        lines.append(f" ]{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(path: str | Path, g: nx.MultiDiGraph) -> None:
    """Write `g` to `path` atomically."""
    atomic.write_text(path, to_json(g))


def read_graph(
    path: str | Path,
    categories: Iterable[str] | None = None,
    predicates: Iterable[str] | None = None,
) -> nx.MultiDiGraph:
    """Read and validate a scene-graph JSON file; raises `InputError` naming file and field.

    `categories` / `predicates`: the allowed vocabularies; None skips that check.
    """
    path = Path(path)
    return from_dict(read_json(path, "scene-graph file"), path, categories, predicates)


def from_json(
    text: str,
    source: str | Path = "<json>",
    categories: Iterable[str] | None = None,
    predicates: Iterable[str] | None = None,
) -> nx.MultiDiGraph:
    """Parse and validate scene-graph JSON text; raises `InputError` naming `source` and field."""
    return from_dict(parse_json(text, source), source, categories, predicates)


def from_dict(
    data: Any,
    source: str | Path = "<dict>",
    categories: Iterable[str] | None = None,
    predicates: Iterable[str] | None = None,
) -> nx.MultiDiGraph:
    """Validate a parsed version-1 object and build the graph (see `read_graph`)."""
    v = _Validator(source)
    v.type(data, dict, "", "a JSON object")
    unknown = sorted(set(data) - _TOP_FIELDS)
    if unknown:
        raise InputError(source, unknown[0], f"unknown field (allowed: {', '.join(sorted(_TOP_FIELDS))})")
    if data.get("format", FORMAT) != FORMAT:
        raise InputError(source, "format", f"expected {FORMAT!r}, got {data.get('format')!r}")
    version = v.integer(v.required(data, "version", ""), "version")
    if version != VERSION:
        raise InputError(source, "version", f"unsupported version {version} (this sim2sg reads {VERSION})")
    env = v.string(v.required(data, "env", ""), "env")
    camera = v.camera(v.required(data, "camera", ""), "camera")
    context = v.context(data.get("context", {}), "context")

    cat_set = None if categories is None else set(categories)
    pred_set = None if predicates is None else set(predicates)
    g = new_graph(env, camera, context)

    objs = v.required(data, "objects", "")
    v.type(objs, list, "objects", "a list")
    for k, o in enumerate(objs):
        f = f"objects[{k}]"
        v.type(o, dict, f, "a JSON object")
        unknown = sorted(set(o) - _OBJECT_FIELDS)
        if unknown:
            raise InputError(source, f"{f}.{unknown[0]}", "unknown field")
        for name in _REQUIRED_OBJECT_FIELDS:
            v.required(o, name, f)
        oid = v.integer(o["id"], f"{f}.id")
        if oid < 0:
            raise InputError(source, f"{f}.id", f"must be >= 0, got {oid}")
        if oid in g:
            raise InputError(source, f"{f}.id", f"duplicate object id {oid}")
        cat = v.string(o["category"], f"{f}.category")
        if cat_set is not None and cat not in cat_set:
            raise InputError(source, f"{f}.category", f"unknown category {cat!r} (known: {', '.join(sorted(cat_set))})")
        pos = tuple(v.numbers(o["position"], 3, f"{f}.position"))
        yaw = v.number(o["yaw"], f"{f}.yaw")
        size = tuple(v.numbers(o["size"], 3, f"{f}.size"))
        for j, s in enumerate(size):
            if s <= 0:
                raise InputError(source, f"{f}.size[{j}]", f"must be positive, got {s}")
        color = o.get("color")
        if color is not None:
            color = tuple(v.numbers(color, 3, f"{f}.color"))
            for j, c in enumerate(color):
                if not 0.0 <= c <= 1.0:
                    raise InputError(source, f"{f}.color[{j}]", f"must be in [0, 1], got {c}")
        material = o.get("material")
        if material is not None:
            material = v.string(material, f"{f}.material")
        texture = o.get("texture")
        if texture is not None:
            texture = v.string(texture, f"{f}.texture")
            if texture not in FAMILIES:
                raise InputError(source, f"{f}.texture", f"unknown texture family {texture!r} "
                                                         f"(known: {', '.join(FAMILIES)})")
        attributes = o.get("attributes", {})
        v.type(attributes, dict, f"{f}.attributes", "a JSON object")
        v.finite_tree(attributes, f"{f}.attributes")
        box = o.get("box")
        if box is not None:
            box = tuple(v.numbers(box, 4, f"{f}.box"))
            if box[2] < box[0] or box[3] < box[1]:
                raise InputError(source, f"{f}.box", f"expected [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1, got {box}")
        score = o.get("score")
        if score is not None:
            score = v.number(score, f"{f}.score")
            if not 0.0 <= score <= 1.0:
                raise InputError(source, f"{f}.score", f"must be in [0, 1], got {score}")
        add_object(g, oid, cat, pos, yaw, size, color=color, material=material, texture=texture,
                   attributes=attributes, box=box, score=score)

    rels = data.get("relationships", [])
    v.type(rels, list, "relationships", "a list")
    for k, r in enumerate(rels):
        f = f"relationships[{k}]"
        v.type(r, dict, f, "a JSON object")
        unknown = sorted(set(r) - {"subject", "predicate", "object"})
        if unknown:
            raise InputError(source, f"{f}.{unknown[0]}", "unknown field")
        s = v.integer(v.required(r, "subject", f), f"{f}.subject")
        p = v.string(v.required(r, "predicate", f), f"{f}.predicate")
        o = v.integer(v.required(r, "object", f), f"{f}.object")
        if pred_set is not None and p not in pred_set:
            raise InputError(source, f"{f}.predicate", f"unknown predicate {p!r} (known: {', '.join(sorted(pred_set))})")
        for name, x in (("subject", s), ("object", o)):
            if x not in g:
                raise InputError(source, f"{f}.{name}", f"no object with id {x}")
        if s == o:
            raise InputError(source, f"{f}", f"self-relation: object {s} cannot be {p!r} of itself")
        if g.has_edge(s, o, key=p):
            raise InputError(source, f, f"duplicate relationship ({s}, {p}, {o})")
        add_relation(g, s, p, o)
    return g


class _Validator(Checker):
    """`Checker` plus the camera object of a scene graph."""

    def camera(self, x, field: str) -> Camera:
        self.type(x, dict, field, "a JSON object")
        for name in _CAMERA_FIELDS:
            self.required(x, name, field)
        w = self.integer(x["width"], f"{field}.width", 1, MAX_IMAGE_SIDE)
        h = self.integer(x["height"], f"{field}.height", 1, MAX_IMAGE_SIDE)
        nums = {k: self.number(x[k], f"{field}.{k}") for k in ("fx", "fy", "cx", "cy")}
        for k in ("fx", "fy"):
            if nums[k] <= 0:
                self.fail(f"{field}.{k}", f"must be positive, got {nums[k]}")
        problem = focal_problem(nums["fx"], nums["fy"], w, h)
        if problem:
            self.fail(f"{field}.fx", problem)
        pos = tuple(self.numbers(x["position"], 3, f"{field}.position"))
        at = tuple(self.numbers(x["look_at"], 3, f"{field}.look_at"))
        if math.dist(pos, at) < 1e-9:
            self.fail(f"{field}.look_at", "must differ from camera.position")
        near = self.number(x.get("near", 0.1), f"{field}.near")
        far = self.number(x.get("far", 1000.0), f"{field}.far")
        if not 0 < near < far:
            self.fail(f"{field}.near", f"need 0 < near < far, got near={near}, far={far}")
        orientation = x.get("orientation")
        if orientation is not None:  # a stage camera the upright model cannot express (see Camera)
            orientation = tuple(self.numbers(orientation, 9, f"{field}.orientation"))
            r = [orientation[i:i + 3] for i in (0, 3, 6)]
            if max(abs(sum(a * b for a, b in zip(r[i], r[j])) - (i == j)) for i in range(3) for j in range(3)) > 1e-4:
                self.fail(f"{field}.orientation", "must be a rotation matrix (orthonormal rows)")
        return Camera(w, h, nums["fx"], nums["fy"], nums["cx"], nums["cy"], pos, at, near, far, orientation)

    def context(self, x, field: str) -> dict:
        """A graph's context: any JSON object of finite values; the fields the compiler reads
        (kind, extent, wall_height and a road's layout) typed when present, all of a road's
        layout required (a predicted 2D graph has no kind)."""
        self.type(x, dict, field, "a JSON object")
        self.finite_tree(x, field)
        if "kind" in x and x["kind"] not in CONTEXT_KINDS:
            self.fail(f"{field}.kind", f"expected one of {', '.join(CONTEXT_KINDS)}, got {x['kind']!r}")
        for key in ("extent", "wall_height", "lane_width"):
            if key in x and self.number(x[key], f"{field}.{key}") <= 0:
                self.fail(f"{field}.{key}", f"must be positive, got {x[key]}")
        if x.get("kind") == "road":
            self.integer(self.required(x, "lanes", field), f"{field}.lanes", 1, 1000)
            for key in ("lane_width", "sidewalk_width", "curb_height"):
                if self.number(self.required(x, key, field), f"{field}.{key}") < 0:
                    self.fail(f"{field}.{key}", f"must be >= 0, got {x[key]}")
        return x
