"""UsdLux lights as the renderer models them: distant (direction), dome (uniform ambient) and
sphere (position, radius) lights, radiance = color * intensity * 2^exposure, in sim2sg's world
frame (+Z up, meters). The reader (`sim2sg.usd.read`) collects them in traversal order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pxr import UsdLux


def is_light(prim) -> bool:
    """Whether `prim` is a UsdLux light (typed, or a prim with LightAPI applied)."""
    return (prim.HasAPI(UsdLux.LightAPI) or prim.IsA(UsdLux.BoundableLightBase)
            or prim.IsA(UsdLux.NonboundableLightBase))


def radiance(light: UsdLux.LightAPI) -> np.ndarray:
    """(3,) float64 linear radiance of a light: color * intensity * 2^exposure, with USD's
    defaults (1, 1, 1), 1 and 0 for unauthored inputs."""
    def value(attr, default):
        v = attr.Get() if attr else None
        return default if v is None else v
    return (np.asarray(value(light.GetColorAttr(), (1, 1, 1)), float)
            * float(value(light.GetIntensityAttr(), 1.0)) * 2.0 ** float(value(light.GetExposureAttr(), 0.0)))


@dataclasses.dataclass(frozen=True)
class Light:
    """One UsdLux light as the renderer models it, in sim2sg's world frame (+Z up, meters).

    kind: "distant", "dome" (uniform ambient) or "sphere".
    rgb: (3,) float64 radiance (`radiance`).
    direction: distant only, (3,) float64 unit vector the light travels along (its local -Z).
    position: sphere only, (3,) float64 center in meters. radius: sphere only, meters.
    """

    kind: str
    rgb: np.ndarray
    direction: np.ndarray | None = None
    position: np.ndarray | None = None
    radius: float = 0.0


def light_of(prim, m: np.ndarray, rot: np.ndarray, conv: np.ndarray, mpu: float) -> Light | None:
    """A UsdLux light prim as a `Light` in world frame (m: its (4, 4) row-vector local-to-world
    matrix in stage units; rot, conv: the reader's stage axes -> Z-up rotation and stage -> world
    meters matrix; mpu: meters per stage unit); None for the kinds the renderer does
    not model (rect, disk, cylinder, ...)."""
    rgb = radiance(UsdLux.LightAPI(prim))
    if prim.IsA(UsdLux.DistantLight):
        d = (np.array([0.0, 0.0, -1.0]) @ m[:3, :3]) @ rot.T  # local -Z in world
        return Light("distant", rgb, direction=d / np.linalg.norm(d))
    if prim.IsA(UsdLux.DomeLight):
        return Light("dome", rgb)
    if prim.IsA(UsdLux.SphereLight):
        position = ((np.zeros((1, 3)) @ m[:3, :3] + m[3, :3]) @ conv.T)[0]
        r = UsdLux.SphereLight(prim).GetRadiusAttr().Get()
        return Light("sphere", rgb, position=position, radius=(0.5 if r is None else float(r)) * mpu)
    return None
