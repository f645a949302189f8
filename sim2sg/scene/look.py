"""Randomize what a scene graph does not fix: surfaces, lights and context looks.

`randomize_look(graph, env, rng)` is the only random step between a graph and its USD stage; the
compiler then takes the graph and this `Look` and uses no randomness. Colors here are *linear*
RGB in [0, 1] (UsdPreviewSurface's convention); graphs and environment palettes hold sRGB.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import networkx as nx
import numpy as np

from sim2sg.errors import InputError
from sim2sg.scene.environment import Environment
from sim2sg.scene.textures import VARIANTS, texture_name


def srgb_to_linear(c) -> tuple[float, float, float]:
    """sRGB [0, 1] -> linear [0, 1] (IEC 61966-2-1)."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return tuple(float(v) for v in lin)


@dataclass(frozen=True)
class Surface:
    """A UsdPreviewSurface: linear `color` (multiplies the texture), `texture` file stem or None
    (constant color), roughness and metallic in [0, 1], `uv_scale` texture repeats per UV unit."""

    color: tuple[float, float, float]
    texture: str | None
    roughness: float
    metallic: float
    uv_scale: float = 1.0


@dataclass(frozen=True)
class Lights:
    """Key distant light and dome fill. `key_direction`: unit world vector *towards* the light;
    intensities in UsdLux units (nits-like, unitless here); colors linear RGB."""

    key_direction: tuple[float, float, float]
    key_intensity: float
    key_color: tuple[float, float, float]
    fill_intensity: float
    fill_color: tuple[float, float, float]


@dataclass(frozen=True)
class Look:
    """Everything the stage needs beyond the graph: per-object surfaces (by graph id), context
    surfaces by role ("ground", "road", "sidewalk", "marking", "wall"), lights."""

    objects: dict[int, Surface]
    context: dict[str, Surface]
    lights: Lights

    def textures(self) -> list[str]:
        """Sorted texture stems the look uses."""
        names = {s.texture for s in list(self.objects.values()) + list(self.context.values())}
        return sorted(n for n in names if n is not None)


def _uniform(rng: np.random.Generator, r) -> float:
    lo, hi = r
    return float(lo) if hi == lo else float(rng.uniform(lo, hi))


def _texture(rng: np.random.Generator, family: str) -> str | None:
    if family == "plain":
        return None  # a constant color: no texture file, simpler for every consumer
    return texture_name(family, int(rng.integers(VARIANTS)))


def _context_surface(rng, env: Environment, role: str, roughness=(0.7, 0.95)) -> Surface:
    ctx = env.context
    families = ctx.get(f"{role}_textures", ["plain"])
    base = np.asarray(ctx.get(f"{role}_color", [128, 128, 128]), dtype=np.float64) / 255.0
    jitter = float(ctx.get("color_jitter", 0.0))
    color = np.clip(base * (1.0 + rng.uniform(-jitter, jitter, 3)), 0, 1)
    return Surface(srgb_to_linear(color), _texture(rng, families[int(rng.integers(len(families)))]),
                   _uniform(rng, roughness), 0.0, uv_scale=0.25)


def check_materials(g: nx.MultiDiGraph, env: Environment, source) -> None:
    """Every object's `material` (where the graph sets one) is one of the environment's; else an
    `InputError` naming the graph file `source` and the object (never replaced by a random one)."""
    for k, (_, a) in enumerate(g.nodes(data=True)):  # nodes keep the file's object order
        m = a.get("material")
        if m is not None and m not in env.materials:
            raise InputError(source, f"objects[{k}].material", f"unknown material {m!r} in environment "
                                                               f"{env.name} (known: {', '.join(sorted(env.materials))})")


def randomize_look(g: nx.MultiDiGraph, env: Environment, rng: np.random.Generator) -> Look:
    """Sample surfaces for every object (graph values win where set) and context, and lights."""
    objects = {}
    for oid, a in sorted(g.nodes(data=True), key=lambda t: t[0]):
        spec = env.category_specs.get(a["category"])
        color = a.get("color")
        if color is None:
            names = spec.colors if spec else sorted(env.palette)
            color = env.palette[names[int(rng.integers(len(names)))]]
        mat_name = a.get("material")
        if mat_name is None:
            names = spec.materials if spec else sorted(env.materials)
            mat_name = names[int(rng.integers(len(names)))]
        elif mat_name not in env.materials:  # graph files are checked with their name (check_materials)
            raise InputError(env.source, "materials", f"object {oid}: unknown material {mat_name!r} "
                                                      f"(known: {', '.join(sorted(env.materials))})")
        mat = env.materials[mat_name]
        family = a.get("texture")
        if family is None:
            fams = spec.textures if spec else ("plain",)
            family = fams[int(rng.integers(len(fams)))]
        objects[oid] = Surface(srgb_to_linear(color), _texture(rng, family), _uniform(rng, mat.roughness),
                               _uniform(rng, mat.metallic))
    kind = env.context["kind"]
    roles = {"ground": ["ground"], "room": ["ground", "wall"], "road": ["ground", "road", "sidewalk"]}[kind]
    context = {role: _context_surface(rng, env, role) for role in roles}
    if kind == "road":
        context["marking"] = Surface((0.8, 0.8, 0.78), None, 0.6, 0.0)
    lt = env.lights
    el, az = math.radians(_uniform(rng, lt["key_elevation"])), math.radians(_uniform(rng, lt["key_azimuth"]))
    cj = float(lt.get("key_color_jitter", 0.0))
    key_color = tuple(float(v) for v in np.clip(1.0 + rng.uniform(-cj, cj, 3), 0, None))
    sky = np.asarray(lt.get("sky_color", [255, 255, 255]), dtype=np.float64) / 255.0
    lights = Lights(
        key_direction=(math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)),
        key_intensity=_uniform(rng, lt["key_intensity"]),
        key_color=key_color,
        fill_intensity=_uniform(rng, lt["fill_intensity"]),
        fill_color=srgb_to_linear(sky),
    )
    return Look(objects, context, lights)


def apply_target_look(look: Look, target) -> Look:
    """`look` with the texture overrides of a `sim2sg.loop.target_look.TargetLook`: each listed object
    or context surface shows its target crop untinted (colour 1, the crop holds the colour);
    roughness, metallic and the lights stay as sampled. None returns `look` unchanged."""
    if target is None:
        return look
    white = (1.0, 1.0, 1.0)
    objects = {oid: (dataclasses.replace(s, color=white, texture=target.objects[oid])
                     if oid in target.objects else s) for oid, s in look.objects.items()}
    context = dict(look.context)
    for role, (stem, uv_scale) in target.context.items():
        if role in context:
            context[role] = dataclasses.replace(context[role], color=white, texture=stem, uv_scale=uv_scale)
    return Look(objects, context, look.lights)
