"""CLEVR generator scene JSON (facebookresearch/clevr-dataset-gen, `render_images.py`) from a `Sample`.

One scene per image::

    {"split": "train", "image_index": 12, "image_filename": "000012.png",
     "objects": [{"shape": "cube", "size": "large", "material": "rubber",
                  "3d_coords": [x, y, z], "rotation": 30.0, "pixel_coords": [u, v, depth],
                  "color": "red"}],
     "directions": {"behind": [x, y, z], "front": ..., "left": ..., "right": ..., "above": ...,
                    "below": ...},
     "relationships": {"behind": [[j, ...], ...], "front": ..., "left": ..., "right": ...}}

Semantics as in CLEVR's generator: `3d_coords` is the object's centre in the world frame (+Z up;
the graph's bottom-face centre raised by half the height), `rotation` the yaw in degrees,
`pixel_coords` the centre's rounded pixel position and its depth along the optical axis (m);
`directions` are the camera's viewing direction (`behind`) and -x axis (`left`) projected on the
ground, their negatives, and world up/down; `relationships[name][i]` lists, sorted, the indices j of
the objects that are `name` of object i: dot(c_j - c_i, directions[name]) > 0.2. Only visible
objects are listed, in instance order.
"""

from __future__ import annotations

import math

import numpy as np

from sim2sg.render.sample import ObjectLabel, Sample
from sim2sg.scene.camera import Camera

RELATION_EPS = 0.2  # CLEVR's eps, in its scene units (meters here)

# CLEVR's properties.json colours (0-255 sRGB), for objects without a `color` attribute.
CLEVR_COLORS = {
    "gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
    "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51),
}
# CLEVR's radii are 0.35 (small) and 0.7 (large): largest extents <= 0.7 m and >= 0.99 m (a large
# cube's side is 2 * 0.7 / sqrt(2)). Objects without a `size` attribute are split halfway.
LARGE_MIN_EXTENT = 0.85

DIRECTION_NAMES = ("behind", "front", "left", "right", "above", "below")
RELATION_NAMES = ("behind", "front", "left", "right")


def directions(camera: Camera) -> dict[str, list[float]]:
    """CLEVR's six unit direction vectors (world frame) for `camera`."""
    d = {k: [float(x) for x in v] for k, v in camera.ground_directions().items()}
    d["above"] = [0.0, 0.0, 1.0]
    d["below"] = [0.0, 0.0, -1.0]
    return {k: d[k] for k in DIRECTION_NAMES}


def compute_relationships(coords: np.ndarray, dirs: dict[str, list[float]], eps: float = RELATION_EPS) -> dict[str, list[list[int]]]:
    """CLEVR relationships of objects at `coords` ((N, 3) world meters).

    Returns {name: [sorted j for each i]} for behind/front/left/right, where j is in [name][i] when
    object j is `name` of object i, i.e. dot(c_j - c_i, dirs[name]) > eps.
    """
    c = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    out = {}
    for name in RELATION_NAMES:
        proj = c @ np.asarray(dirs[name], dtype=np.float64)
        diff = proj[None, :] - proj[:, None]  # [i, j] = dot(c_j - c_i, dir)
        out[name] = [[int(j) for j in np.flatnonzero(diff[i] > eps) if j != i] for i in range(len(c))]
    return out


def color_name(obj_attrs: dict, color: tuple[float, float, float] | None) -> str:
    """The object's `color` attribute, else the CLEVR colour nearest to its sRGB colour ([0, 1]),
    else "gray"."""
    if isinstance(obj_attrs.get("color"), str):
        return obj_attrs["color"]
    if color is None:
        return "gray"
    rgb = np.asarray(color, dtype=np.float64) * 255.0
    return min(CLEVR_COLORS, key=lambda k: float(np.sum((np.asarray(CLEVR_COLORS[k]) - rgb) ** 2)))


def size_name(obj_attrs: dict, size: tuple[float, float, float]) -> str:
    """The object's `size` attribute, else "large" when its largest extent >= LARGE_MIN_EXTENT."""
    if isinstance(obj_attrs.get("size"), str):
        return obj_attrs["size"]
    return "large" if max(size) >= LARGE_MIN_EXTENT else "small"


def material_name(obj_attrs: dict, material: str | None) -> str:
    """The object's `material` attribute, else its material name, else "rubber"."""
    if isinstance(obj_attrs.get("material"), str):
        return obj_attrs["material"]
    return material or "rubber"


def scene(sample: Sample, image_index: int, image_filename: str, split: str = "train") -> dict:
    """The CLEVR scene JSON object of `sample` (see the module docstring)."""
    cam = sample.camera
    objs = []
    centres = []
    for o in sample.objects:
        node = _node(sample, o)
        attrs = node.get("attributes") or {}
        centre = (o.position[0], o.position[1], o.position[2] + 0.5 * o.size[2])
        uv, depth = cam.project(np.asarray([centre]))
        centres.append(centre)
        objs.append({
            "shape": attrs.get("shape") if isinstance(attrs.get("shape"), str) else o.category,
            "size": size_name(attrs, o.size),
            "material": material_name(attrs, node.get("material")),
            "3d_coords": [float(v) for v in centre],
            "rotation": float(o.yaw % 360.0),
            "pixel_coords": [_round(uv[0, 0]), _round(uv[0, 1]), float(depth[0])],
            "color": color_name(attrs, node.get("color")),
        })
    dirs = directions(cam)
    return {
        "split": split,
        "image_index": int(image_index),
        "image_filename": image_filename,
        "objects": objs,
        "directions": dirs,
        "relationships": compute_relationships(np.asarray(centres).reshape(-1, 3), dirs),
    }


def _round(x: float) -> int:
    # Python's round() rounds halves to even, as CLEVR's `int(round(...))` does.
    return int(round(float(x))) if math.isfinite(x) else 0


def _node(sample: Sample, o: ObjectLabel) -> dict:
    if sample.graph is not None and o.object_id in sample.graph:
        return sample.graph.nodes[o.object_id]
    return {}
