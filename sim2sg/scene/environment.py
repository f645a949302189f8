"""Environments as data: TOML files in `scenes/` (or any path) parsed into the frozen dataclasses
of `sim2sg.scene.schema`: locating a file and the one-pass reader with field paths.

An environment holds every knob a user may shift for a new domain: class list and mix, object
counts, palette, materials, size ranges, placement rules, camera and jitter, lights, texture
families, context (ground / room / road), visibility threshold and appearance post-processing.
A new domain is a copied and edited file, no code. See `scenes/clevr.toml` for the documented
reference of every field.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

from sim2sg._data import data_dir
from sim2sg.checks import FOV_DEG, MAX_IMAGE_SIDE, focal_problem, focal_px, parse_toml
from sim2sg.errors import InputError
from sim2sg.scene.schema import (  # noqa: F401  (the schema's names are part of this module's API)
    CONTEXT_KINDS,
    KNOWN_PREDICATES,
    PLACEMENTS,
    ROAD_PLACEMENTS,
    SIDES,
    SPATIAL_PREDICATES,
    CameraSpec,
    CategorySpec,
    Environment,
    MaterialSpec,
    PostProcess,
    Range,
)


# ---- locating -----------------------------------------------------------------------------------
def builtin_names() -> list[str]:
    """Names of the environments shipped in `scenes/`."""
    return sorted(p.stem for p in data_dir("scenes").glob("*.toml"))


def resolve(name_or_path: str | Path) -> tuple[str, str]:
    """(source label, TOML text) for a built-in name or a file path."""
    p = Path(name_or_path)
    # A bare name is a built-in even if a folder of that name sits in the cwd.
    if p.suffix == ".toml" or p.is_file():
        try:
            return str(p), p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(p, "", "environment file not found") from None
        except UnicodeDecodeError as e:
            raise InputError(p, "", f"not UTF-8 text ({e.reason} at byte {e.start}); TOML files are UTF-8") from None
        except OSError as e:
            raise InputError(p, "", f"cannot read environment file: {e}") from None
    entry = data_dir("scenes") / f"{name_or_path}.toml"
    if not entry.is_file():
        raise InputError(
            str(name_or_path), "env",
            f"unknown environment (built-in: {', '.join(builtin_names())}; or give a .toml path)",
        )
    return f"scenes/{name_or_path}.toml", entry.read_text(encoding="utf-8")


def load_env(name_or_path: str | Path) -> Environment:
    """Load and validate a built-in environment by name or an environment TOML file."""
    source, text = resolve(name_or_path)
    return parse_env(parse_toml(text, source), source)


# ---- parsing ------------------------------------------------------------------------------------
class _Reader:
    """Typed access to nested TOML tables with errors naming file and dotted field."""

    def __init__(self, source: str):
        self.source = source
        # Keys asked for, per table (by id): what is left over in the file is an unknown field.
        self.asked: dict[int, set[str]] = {}

    def fail(self, field: str, msg: str):
        raise InputError(self.source, field, msg)

    def ask(self, d: dict, key: str) -> None:
        self.asked.setdefault(id(d), set()).add(key)

    def unknown_fields(self, d: dict, parent: str = "") -> None:
        """Fail on the first key of `d` (recursively, through the tables read) that the parser
        never asked for: a typo such as `wieght` must not silently fall back to a default."""
        asked = self.asked.get(id(d), set())
        for key, value in d.items():
            f = _join(parent, key)
            if key not in asked:
                close = difflib.get_close_matches(key, sorted(asked), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(f, f"unknown field{hint}; docs/environments.md lists every field")
            if isinstance(value, dict) and id(value) in self.asked:
                self.unknown_fields(value, f)

    def table(self, d: dict, key: str, parent: str, required: bool = True) -> dict:
        f = _join(parent, key)
        self.ask(d, key)
        if key not in d:
            if required:
                self.fail(f, "missing required table")
            return {}
        if not isinstance(d[key], dict):
            self.fail(f, f"expected a table, got {type(d[key]).__name__}")
        return d[key]

    def get(self, d: dict, key: str, parent: str, default: Any = ...):
        self.ask(d, key)
        if key not in d:
            if default is ...:
                self.fail(_join(parent, key), "missing required field")
            return default
        return d[key]

    def num(self, d, key, parent, default: Any = ..., lo: float | None = None, positive=False) -> float:
        x = self.get(d, key, parent, default)
        f = _join(parent, key)
        if x is None and key not in d:
            return x
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            self.fail(f, f"expected a number, got {type(x).__name__}")
        if not math.isfinite(x):
            self.fail(f, f"must be finite, got {x}")
        if positive and x <= 0:
            self.fail(f, f"must be positive, got {x}")
        if lo is not None and x < lo:
            self.fail(f, f"must be >= {lo}, got {x}")
        return float(x)

    def integer(self, d, key, parent, default: Any = ..., lo: int | None = None, hi: int | None = None) -> int:
        x = self.get(d, key, parent, default)
        if isinstance(x, bool) or not isinstance(x, int):
            self.fail(_join(parent, key), f"expected an integer, got {type(x).__name__}")
        if lo is not None and x < lo:
            self.fail(_join(parent, key), f"must be >= {lo}, got {x}")
        if hi is not None and x > hi:
            self.fail(_join(parent, key), f"must be <= {hi}, got {x}")
        return int(x)

    def flag(self, d, key, parent, default: bool) -> bool:
        x = self.get(d, key, parent, default)
        if not isinstance(x, bool):  # bool("no") is True: a quoted "false" must not switch it on
            self.fail(_join(parent, key), f"expected true or false, got {x!r}")
        return x

    def string(self, d, key, parent, default: Any = ..., choices=None) -> str:
        x = self.get(d, key, parent, default)
        if x is None and key not in d:
            return x
        if not isinstance(x, str) or not x:
            self.fail(_join(parent, key), f"expected a non-empty string, got {type(x).__name__}")
        if choices is not None and x not in choices:
            self.fail(_join(parent, key), f"{x!r} is not one of {', '.join(choices)}")
        return x

    def vec(self, d, key, parent, n: int, default: Any = ..., positive=False) -> tuple[float, ...]:
        x = self.get(d, key, parent, default)
        f = _join(parent, key)
        if x is None and key not in d:
            return x
        if not isinstance(x, list) or len(x) != n:
            self.fail(f, f"expected a list of {n} numbers")
        out = []
        for i, c in enumerate(x):
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
                self.fail(f"{f}[{i}]", f"expected a finite number, got {c!r}")
            if positive and c <= 0:
                self.fail(f"{f}[{i}]", f"must be positive, got {c}")
            out.append(float(c))
        return tuple(out)

    def rng(self, d, key, parent, default: Any = ..., lo: float | None = None, hi: float | None = None) -> Range:
        """A [lo, hi] range (a single number means a fixed value), within [lo, hi] when given."""
        x = self.get(d, key, parent, default)
        f = _join(parent, key)
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            x = [x, x]
        r = self.vec({key: x}, key, parent, 2)
        if r[1] < r[0]:
            self.fail(f, f"range [lo, hi] needs lo <= hi, got {list(r)}")
        if not math.isfinite(r[1] - r[0]):  # numpy's uniform draws need a finite span
            self.fail(f, f"range too wide, got {list(r)}")
        if lo is not None and r[0] < lo:
            self.fail(f, f"must be >= {lo}, got {list(r)}")
        if hi is not None and r[1] > hi:
            self.fail(f, f"must be <= {hi}, got {list(r)}")
        return r

    def irange(self, d, key, parent, default: Any = ...) -> tuple[int, int] | None:
        x = self.get(d, key, parent, default)
        f = _join(parent, key)
        if x is None:
            return None
        if isinstance(x, int) and not isinstance(x, bool):
            x = [x, x]
        if (not isinstance(x, list) or len(x) != 2
                or any(isinstance(c, bool) or not isinstance(c, int) for c in x)):
            self.fail(f, "expected [lo, hi] integers")
        if x[0] < 0 or x[1] < x[0]:
            self.fail(f, f"need 0 <= lo <= hi, got {x}")
        return int(x[0]), int(x[1])

    def strings(self, d, key, parent, default: Any = ..., allowed=None) -> tuple[str, ...]:
        x = self.get(d, key, parent, default)
        f = _join(parent, key)
        if not isinstance(x, list) or not all(isinstance(s, str) and s for s in x):
            self.fail(f, "expected a list of strings")
        if allowed is not None:
            for i, s in enumerate(x):
                if s not in allowed:
                    self.fail(f"{f}[{i}]", f"unknown name {s!r} (known: {', '.join(sorted(allowed))})")
        if len(set(x)) != len(x):
            self.fail(f, "duplicate names")
        return tuple(x)


def _rgb255(r: _Reader, d: dict, key: str, parent: str) -> tuple[float, float, float]:
    rgb = r.vec(d, key, parent, 3)
    for i, c in enumerate(rgb):
        if not 0 <= c <= 255:
            r.fail(f"{_join(parent, key)}[{i}]", f"sRGB components are 0..255, got {c}")
    return rgb


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


# Names an environment gives (materials, meshes): plain names, never paths (a mesh name picks a
# file in assets/objects/, so "../x" would reach out of it).
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _name(r: _Reader, name: str, field: str) -> str:
    if not NAME.fullmatch(name) or ".." in name:
        r.fail(field, f"{name!r} is not a name (letters, digits, '_', '-', '.'; no paths)")
    return name


def parse_env(raw: dict, source: str = "<env>") -> Environment:
    """Validate a parsed environment TOML dict (see scenes/clevr.toml for every field)."""
    r = _Reader(source)
    name = r.string(raw, "name", "")
    categories = r.strings(raw, "categories", "")
    if "__background__" in categories:  # class 0 of every label file and network
        r.fail("categories", "'__background__' is reserved for the background class")
    if not categories:
        r.fail("categories", "needs at least one category")
    predicates = r.strings(raw, "predicates", "", allowed=KNOWN_PREDICATES)

    cam = r.table(raw, "camera", "")
    width = r.integer(cam, "width", "camera", lo=1, hi=MAX_IMAGE_SIDE)
    height = r.integer(cam, "height", "camera", lo=1, hi=MAX_IMAGE_SIDE)
    hfov = r.num(cam, "hfov_deg", "camera", positive=True)
    if not FOV_DEG[0] <= hfov <= FOV_DEG[1]:
        r.fail("camera.hfov_deg", f"must be in [{FOV_DEG[0]}, {FOV_DEG[1]}] degrees, got {hfov}")
    focal = focal_px(hfov, width)  # square pixels: the vertical view follows
    problem = focal_problem(focal, focal, width, height)
    if problem:
        r.fail("camera.hfov_deg", problem)
    camera = CameraSpec(
        width=width, height=height, hfov_deg=hfov,
        position=r.vec(cam, "position", "camera", 3),
        look_at=r.vec(cam, "look_at", "camera", 3),
        position_jitter=r.vec(cam, "position_jitter", "camera", 3, default=[0, 0, 0]),
        look_at_jitter=r.vec(cam, "look_at_jitter", "camera", 3, default=[0, 0, 0]),
        principal_offset=r.vec(cam, "principal_offset", "camera", 2, default=[0, 0]),
        near=r.num(cam, "near", "camera", default=0.1, positive=True),
        far=r.num(cam, "far", "camera", default=1000.0, positive=True),
        follow_lane=r.flag(cam, "follow_lane", "camera", False),
    )
    if camera.far <= camera.near:
        r.fail("camera.far", "must be greater than camera.near")
    if camera.position == camera.look_at:
        r.fail("camera.look_at", "must differ from camera.position")

    palette_t = r.table(raw, "palette", "")
    palette = {cname: tuple(c / 255.0 for c in _rgb255(r, palette_t, cname, "palette")) for cname in palette_t}
    if not palette:
        r.fail("palette", "needs at least one color")

    mats_t = r.table(raw, "materials", "")
    materials = {}
    for mname, m in mats_t.items():
        r.ask(mats_t, mname)
        _name(r, mname, f"materials.{mname}")
        if not isinstance(m, dict):
            r.fail(f"materials.{mname}", "expected a table")
        materials[mname] = MaterialSpec(
            # UsdPreviewSurface's roughness and metallic are fractions: Blender and Omniverse clamp
            # what lies outside [0, 1], the rasterizer would not
            roughness=r.rng(m, "roughness", f"materials.{mname}", lo=0.0, hi=1.0),
            metallic=r.rng(m, "metallic", f"materials.{mname}", lo=0.0, hi=1.0),
        )
    if not materials:
        r.fail("materials", "needs at least one material")

    sizes_t = r.table(raw, "sizes", "", required=False)
    sizes = {k: r.num(sizes_t, k, "sizes", positive=True) for k in sizes_t}

    from sim2sg.scene.meshes import asset_names
    from sim2sg.scene.textures import (
        FAMILIES,  # texture family names are defined beside their generators
    )

    objs = r.table(raw, "objects", "")
    total = r.irange(objs, "total", "objects", default=None)
    specs: dict[str, CategorySpec] = {}
    for cat in categories:
        p = f"objects.{cat}"
        c = r.table(objs, cat, "objects")
        base = r.vec(c, "base_size", p, 3, default=None, positive=True)
        smin = r.vec(c, "size_min", p, 3, default=None, positive=True)
        smax = r.vec(c, "size_max", p, 3, default=None, positive=True)
        if (base is None) == (smin is None):
            r.fail(p, "give either base_size (with scales) or size_min/size_max")
        if smin is not None:
            if smax is None:
                r.fail(f"{p}.size_max", "missing required field (with size_min)")
            for i in range(3):
                if smax[i] < smin[i]:
                    r.fail(f"{p}.size_max[{i}]", "must be >= size_min")
        scales = r.strings(c, "scales", p, default=[], allowed=sizes) if base is not None else ()
        if base is not None and not scales:
            r.fail(f"{p}.scales", "base_size needs at least one named scale from [sizes]")
        raw_pl = r.get(c, "placement", p)
        if isinstance(raw_pl, list):
            placements = r.strings(c, "placement", p, allowed=PLACEMENTS)
            if not placements:
                r.fail(f"{p}.placement", "needs at least one placement")
            weights = r.vec(c, "placement_weights", p, len(placements), default=[1.0] * len(placements))
            if min(weights) < 0 or not 0 < sum(weights) < math.inf:
                r.fail(f"{p}.placement_weights", "weights must be >= 0 with a positive, finite sum")
        else:
            placements = (r.string(c, "placement", p, choices=PLACEMENTS),)
            weights = (1.0,)
        placement = placements[0]
        if len(placements) > 1 and any(x in ("around", "on") for x in placements):
            r.fail(f"{p}.placement", "around/on cannot be mixed with other placements")
        anchor = r.string(c, "anchor", p, default=None)
        if placement in ("around", "on"):
            if anchor is None:
                r.fail(f"{p}.anchor", f"placement {placement!r} needs an anchor category")
            if anchor not in categories or categories.index(anchor) >= categories.index(cat):
                r.fail(f"{p}.anchor", f"{anchor!r} must be a category listed before {cat!r}")
        count = r.irange(c, "count", p, default=None)
        if total is None and count is None:
            r.fail(f"{p}.count", "missing: give each category a count, or objects.total")
        colors = r.strings(c, "colors", p, default=sorted(palette), allowed=palette)
        mats = r.strings(c, "materials", p, default=sorted(materials), allowed=materials)
        texs = r.strings(c, "textures", p, default=["plain"], allowed=FAMILIES)
        if not colors or not mats or not texs:
            r.fail(p, "colors, materials and textures need at least one entry each")
        specs[cat] = CategorySpec(
            name=cat,
            mesh=_mesh_name(r, c, p, asset_names),
            count=count,
            weight=r.num(c, "weight", p, default=1.0, lo=0.0),
            base_size=base, scales=scales, size_min=smin, size_max=smax,
            uniform_scale=r.flag(c, "uniform_scale", p, False),
            yaw=r.rng(c, "yaw", p, default=[0.0, 360.0]),
            colors=colors, materials=mats, textures=texs,
            placement=placement, anchor=anchor,
            distance=r.rng(c, "distance", p, default=[0.0, 0.0]),
            depth=r.rng(c, "depth", p, default=[5.0, 50.0]),
            face_anchor=r.flag(c, "face_anchor", p, False),
            lane_yaw=r.flag(c, "lane_yaw", p, True),
            sides=r.string(c, "sides", p, default="both", choices=SIDES),
            placements=tuple(placements), placement_weights=tuple(weights),
        )
    if total is not None and not 0 < sum(specs[c].weight for c in categories if specs[c].count is None) < math.inf:
        r.fail("objects", "objects.total needs a positive weight on some category (and a finite sum)")

    pl = r.table(raw, "placement", "")
    area = r.vec(pl, "area", "placement", 4)
    if area[1] <= area[0] or area[3] <= area[2]:
        r.fail("placement.area", "expected [x_min, x_max, y_min, y_max] with min < max")
    if not math.isfinite(area[1] - area[0]) or not math.isfinite(area[3] - area[2]):
        r.fail("placement.area", f"range too wide, got {list(area)}")
    rel = r.table(raw, "relations", "")
    ctx = r.table(raw, "context", "")
    r.string(ctx, "kind", "context", choices=CONTEXT_KINDS)
    if ctx["kind"] != "road" and any(x in ROAD_PLACEMENTS for c in categories for x in specs[c].placements):
        r.fail("context.kind", "lane/curb/sidewalk/roadside placements need context.kind = \"road\"")
    if ctx["kind"] == "road":
        road = r.table(ctx, "road", "context")
        r.irange(road, "lanes", "context.road")
        r.rng(road, "lane_width", "context.road", lo=0.5)
        r.rng(road, "sidewalk_width", "context.road", lo=0.0)
        r.rng(road, "curb_height", "context.road", default=[0.15, 0.15], lo=0.0)
    r.num(ctx, "extent", "context", default=40.0, positive=True)
    r.num(ctx, "wall_height", "context", default=3.0, positive=True)
    r.num(ctx, "color_jitter", "context", default=0.0, lo=0.0)
    for role in ("ground", "road", "sidewalk", "wall"):
        if f"{role}_textures" in ctx:
            r.strings(ctx, f"{role}_textures", "context", allowed=FAMILIES)
        if f"{role}_color" in ctx:
            _rgb255(r, ctx, f"{role}_color", "context")
    lights = r.table(raw, "lights", "")
    for key in ("key_elevation", "key_azimuth"):
        r.rng(lights, key, "lights")
    for key in ("key_intensity", "fill_intensity"):
        r.rng(lights, key, "lights", lo=0.0)
    r.num(lights, "key_color_jitter", "lights", default=0.0, lo=0.0)
    if "sky_color" in lights:
        _rgb255(r, lights, "sky_color", "lights")
    rend = r.table(raw, "render", "", required=False)
    appearance = r.table(raw, "appearance", "", required=False)
    PostProcess.from_dict(r.table(appearance, "post", "appearance", required=False), source)  # as the renderer will
    env = Environment(
        name=name, source=source,
        description=r.string(raw, "description", "", default=""),
        categories=categories, predicates=predicates, camera=camera, total=total,
        category_specs=specs, sizes=sizes, palette=palette, materials=materials, area=area,
        min_dist=r.num(pl, "min_dist", "placement", default=None, lo=0.0),  # < 0: objects interpenetrate
        margin=r.num(pl, "margin", "placement", default=None, lo=0.0),
        max_attempts=r.integer(pl, "max_attempts", "placement", default=50, lo=1),
        max_restarts=r.integer(pl, "max_restarts", "placement", default=100, lo=1),
        relation_threshold=r.num(rel, "threshold", "relations", lo=0.0),
        on_tolerance=r.num(rel, "on_tolerance", "relations", default=0.02, lo=0.0),
        require_category=r.strings(rel, "require_category", "relations", default=[], allowed=categories),
        context=ctx, lights=lights,
        min_visible_pixels=r.integer(rend, "min_visible_pixels", "render", default=1, lo=0),
        raw=raw,
    )
    r.unknown_fields(raw)
    return env


def _mesh_name(r: _Reader, c: dict, parent: str, asset_names) -> str:
    """An object's `mesh`: the name of an asset in assets/objects/ (never a path)."""
    name = _name(r, r.string(c, "mesh", parent), f"{parent}.mesh")
    known = asset_names()
    if name not in known:
        r.fail(f"{parent}.mesh", f"unknown mesh asset {name!r} (known: {', '.join(known)})")
    return name
