"""The environment schema: the frozen dataclasses an environment file is parsed into
(`sim2sg.scene.environment.parse_env`) and the vocabularies its fields take. Units: metres,
degrees, pixels; world +Z up. `scenes/clevr.toml` documents every field."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from sim2sg.errors import InputError

PLACEMENTS = ("area", "around", "on", "lane", "curb", "sidewalk", "roadside")
ROAD_PLACEMENTS = ("lane", "curb", "sidewalk", "roadside")
SIDES = ("both", "right", "left")
CONTEXT_KINDS = ("ground", "room", "road")
SPATIAL_PREDICATES = ("front", "behind", "left", "right")
KNOWN_PREDICATES = SPATIAL_PREDICATES + ("on",)

Range = tuple[float, float]


@dataclass(frozen=True)
class CameraSpec:
    """Nominal camera (world meters, pixels) plus uniform jitter half-widths per world axis."""

    width: int
    height: int
    hfov_deg: float
    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    position_jitter: tuple[float, float, float]
    look_at_jitter: tuple[float, float, float]
    principal_offset: tuple[float, float]  # (cx, cy) minus the image centre, pixels
    near: float
    far: float
    # Road scenes put the camera over a lane: its x follows the sampled lane (see context.road).
    follow_lane: bool


@dataclass(frozen=True)
class CategorySpec:
    """How one object class is sampled.

    size: either `base_size` times a named scale from `Environment.sizes` (CLEVR), or uniform per
    axis in [size_min, size_max] (meters; `uniform_scale` keeps proportions).
    placement: one of PLACEMENTS; `anchor` names the category for "around" / "on".
    """

    name: str
    mesh: str
    count: tuple[int, int] | None
    weight: float
    base_size: tuple[float, float, float] | None
    scales: tuple[str, ...]
    size_min: tuple[float, float, float] | None
    size_max: tuple[float, float, float] | None
    uniform_scale: bool
    yaw: Range
    colors: tuple[str, ...]
    materials: tuple[str, ...]
    textures: tuple[str, ...]
    placement: str  # the first of `placements`
    anchor: str | None
    distance: Range  # "around": gap from the anchor's footprint edge; lane/sidewalk/roadside: lateral offset
    depth: Range  # lane/sidewalk/roadside: distance ahead of the camera along the road (m)
    face_anchor: bool  # "around": turn to face the anchor (chairs at tables)
    lane_yaw: bool  # lane placement: yaw follows the lane direction (+ yaw jitter)
    sides: str  # curb/sidewalk/roadside: which side of the road ("both", "right", "left")
    placements: tuple[str, ...] = ()  # several rules, one drawn per object by placement_weights
    placement_weights: tuple[float, ...] = ()


@dataclass(frozen=True)
class MaterialSpec:
    roughness: Range
    metallic: Range


@dataclass(frozen=True)
class Environment:
    """A parsed environment file. `raw` keeps the parsed TOML for downstream tables
    (e.g. `[appearance.post]` for the renderer)."""

    name: str
    source: str
    description: str
    categories: tuple[str, ...]
    predicates: tuple[str, ...]
    camera: CameraSpec
    total: tuple[int, int] | None
    category_specs: dict[str, CategorySpec]
    sizes: dict[str, float]
    palette: dict[str, tuple[float, float, float]]
    materials: dict[str, MaterialSpec]
    area: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max (m)
    min_dist: float | None
    margin: float | None
    max_attempts: int
    max_restarts: int
    relation_threshold: float
    on_tolerance: float
    require_category: tuple[str, ...]
    context: dict
    lights: dict
    min_visible_pixels: int
    raw: dict

    def spec(self, category: str) -> CategorySpec:
        return self.category_specs[category]


@dataclass(frozen=True)
class PostProcess:
    """An environment's `[appearance.post]`, applied by `sim2sg.render.post.apply_post`: ranges
    sampled per image. blur_sigma: Gaussian sigma in pixels; noise_std: std of additive
    noise in [0, 1] intensity units; brightness, contrast, saturation: multipliers (1 = unchanged);
    hue_shift: degrees; jpeg_quality: 1-100, 0 = no JPEG."""

    blur_sigma: Range = (0.0, 0.0)
    noise_std: Range = (0.0, 0.0)
    brightness: Range = (1.0, 1.0)
    contrast: Range = (1.0, 1.0)
    saturation: Range = (1.0, 1.0)
    hue_shift: Range = (0.0, 0.0)
    jpeg_quality: Range = (0.0, 0.0)

    @staticmethod
    def from_dict(d: dict, source: str = "<environment>") -> "PostProcess":
        """Read exactly these keys (each a number or [lo, hi]) from an `[appearance.post]` table."""
        names = {f.name for f in fields(PostProcess)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(source, f"appearance.post.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(names))})")
        out = {}
        for k, v in d.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = (float(v), float(v))
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                raise InputError(source, f"appearance.post.{k}", "expected a number or [lo, hi]")
            lo, hi = float(v[0]), float(v[1])
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise InputError(source, f"appearance.post.{k}", "expected finite lo <= hi")
            if k in ("blur_sigma", "noise_std", "brightness", "contrast", "saturation", "jpeg_quality") and lo < 0:
                raise InputError(source, f"appearance.post.{k}", "must be >= 0")
            if k == "jpeg_quality" and hi > 100:
                raise InputError(source, f"appearance.post.{k}", "must be <= 100")
            out[k] = (lo, hi)
        return PostProcess(**out)
