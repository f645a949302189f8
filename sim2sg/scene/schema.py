"""The environment schema: the frozen dataclasses an environment file is parsed into
(`sim2sg.scene.environment.parse_env`) and the vocabularies its fields take. Units: metres,
degrees, pixels; world +Z up. `scenes/clevr.toml` documents every field."""

from __future__ import annotations

from dataclasses import dataclass

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
