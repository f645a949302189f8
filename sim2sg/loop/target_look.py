"""Appearance taken from the target images: texture crops for the synthesis step (real-to-sim).

The synthesis step lifts each target image's predicted graph to 3D and renders it again. By
default the generated scene is dressed with random looks from the *source* environment, so its
content follows the target but its appearance does not. With target looks, each lifted object is
textured with the pixels inside its own predicted box on the target image, and the ground (the
road, for road contexts) with a patch of that image's ground, rectified to a metric square with
the known camera. The generated images then carry the target's object textures, colours and
ground pattern, with the source environment's exact labels. Only unlabelled target pixels and the
model's own predictions are used.

Crops include the target's shading, which the renderer shades once more; that darkens them a
little and is left to the photometric augmentation. A false detection (a tile seen as a cube)
gives a cube textured with tiles: still a correctly labelled cube.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import networkx as nx
import numpy as np

from sim2sg import atomic
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera
from sim2sg.scene.meshes import context_uv_scale

OBJECT_SIZE = 48  # texture side (px) of an object crop
GROUND_SIZE = 64  # texture side (px) of a rectified ground patch
GROUND_PATCH = 0.2  # a ground patch spans about this fraction of the image's smaller side
INSET = 0.2  # object crops drop this fraction of the box on each side (background corners)
MIN_CROP_PX = 4  # smaller crops (after the inset) keep the environment's look
_CANDIDATES = 32  # ground patch positions tried per image


@dataclass(frozen=True)
class TargetLook:
    """Texture overrides for one generated scene: texture stems relative to the texture root.

    objects: graph object id -> stem. context: surface role ("ground" or "road") -> (stem,
    uv_scale), uv_scale being the Surface's texture repeats per mesh UV unit, so that one texture
    spans the patch's width in meters.
    """

    objects: dict[int, str]
    context: dict[str, tuple[str, float]]


def object_crop(image: np.ndarray, box, inset: float = INSET, size: int = OBJECT_SIZE) -> np.ndarray | None:
    """(size, size, 3) uint8: the inside of `box` (x1, y1, x2, y2 px) of `image` (H, W, 3) uint8,
    less `inset` of the box on each side, resized; None when under MIN_CROP_PX on a side."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = inset * (x2 - x1), inset * (y2 - y1)
    c0, c1 = max(0, int(math.floor(x1 + dx))), min(w, int(math.ceil(x2 - dx)))
    r0, r1 = max(0, int(math.floor(y1 + dy))), min(h, int(math.ceil(y2 - dy)))
    if c1 - c0 < MIN_CROP_PX or r1 - r0 < MIN_CROP_PX:
        return None
    return cv2.resize(np.ascontiguousarray(image[r0:r1, c0:c1]), (size, size), interpolation=cv2.INTER_AREA)


def ground_quad(cam: Camera, centre: np.ndarray, side: float, z: float = 0.0) -> np.ndarray:
    """(4, 2) pixel corners of the world square of `side` m centred on ground point `centre`
    (axis-aligned, at height z), in texture order: (u, v) = (0, 1), (1, 1), (1, 0), (0, 0), i.e.
    the texture's top-left, top-right, bottom-right, bottom-left (row 0 is v = 1)."""
    x, y, h = float(centre[0]), float(centre[1]), side / 2
    corners = np.array([[x - h, y + h, z], [x + h, y + h, z], [x + h, y - h, z], [x - h, y - h, z]])
    uv, depth = cam.project(corners)
    return np.where(depth[:, None] > 1e-6, uv, np.nan)


def _overlap(quad: np.ndarray, boxes: np.ndarray, pad: float = 2.0) -> float:
    """How much of the bounding box of `quad` (4, 2) px the `boxes` (N, 4) px, grown by `pad`,
    cover: the sum of their intersections over its area, clipped to 1 (an upper bound of the
    covered fraction; 0 exactly when the patch sees none of them)."""
    if len(boxes) == 0:
        return 0.0
    qx1, qy1 = quad.min(0)
    qx2, qy2 = quad.max(0)
    area = max((qx2 - qx1) * (qy2 - qy1), 1e-6)
    ix = np.clip(np.minimum(qx2, boxes[:, 2] + pad) - np.maximum(qx1, boxes[:, 0] - pad), 0, None)
    iy = np.clip(np.minimum(qy2, boxes[:, 3] + pad) - np.maximum(qy1, boxes[:, 1] - pad), 0, None)
    return float(min(1.0, (ix * iy).sum() / area))


def ground_patch(image: np.ndarray, cam: Camera, boxes: np.ndarray, rng: np.random.Generator,
                 lateral: float | None = None, size: int = GROUND_SIZE,
                 patch: float = GROUND_PATCH) -> tuple[np.ndarray, float] | None:
    """A rectified square of the ground z = 0 seen in `image` (H, W, 3) uint8 by `cam`, away from
    the detected `boxes` (N, 4) px: ((size, size, 3) uint8 texture with u along world +X and v
    along world +Y, side in meters), or None when no candidate square lies inside the image.

    Candidates are centred on random pixels below the horizon (with `lateral`, only within that
    many meters of the camera's ground track, e.g. the ego lane); each spans about `patch` of the
    image's smaller side. The first candidate clear of every box wins, else the least covered one.
    """
    h, w = image.shape[:2]
    patch_px = patch * min(h, w)
    eye = np.asarray(cam.position, dtype=np.float64)
    right = cam.rotation()[0]  # the camera's x axis: horizontal (no roll)
    best, best_cover = None, math.inf
    for _ in range(_CANDIDATES):
        u, v = rng.uniform(0, w), rng.uniform(0.35 * h, h)
        centre = cam.plane_point((u, v), 0.0)
        if centre is None:
            continue
        if lateral is not None and abs(float(np.dot(centre - eye, right))) > lateral:
            continue
        depth = float(cam.world_to_camera(centre[None])[0, 2])
        side = patch_px * depth / cam.fx
        quad = ground_quad(cam, centre, side)
        if np.isnan(quad).any() or quad[:, 0].min() < 0 or quad[:, 1].min() < 0 \
                or quad[:, 0].max() > w - 1 or quad[:, 1].max() > h - 1:
            continue
        cover = _overlap(quad, boxes)
        if cover < best_cover:
            best, best_cover = (quad, side), cover
            if cover == 0.0:
                break
    if best is None:
        return None
    quad, side = best
    dst = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
    tex = cv2.warpPerspective(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return tex, side


def write_target_look(image: np.ndarray, g: nx.MultiDiGraph, cam: Camera, boxes: np.ndarray,
                      rng: np.random.Generator, root: Path, stem: str) -> TargetLook:
    """Crop the textures of lifted graph `g` (objects need `box`, px on `image`) from target
    `image` (H, W, 3) uint8 sRGB and write them as PNGs under `root` (the texture root) as
    `stem_oN.png` / `stem_ground.png`; returns the overrides for `sim2sg.scene.look.apply_target_look`.
    boxes: (N, 4) px, every detection on the image (the ground patch avoids all of them)."""
    objects: dict[int, str] = {}
    for oid, a in sg.objects(g):
        if a.get("box") is None:
            continue
        crop = object_crop(image, a["box"])
        if crop is not None:
            objects[oid] = _write(root, f"{stem}_o{oid}", crop)
    context: dict[str, tuple[str, float]] = {}
    kind = g.graph["context"]["kind"]
    role = "road" if kind == "road" else "ground"
    # On a road the patch stays in the camera's own lane: the road surface, not the verge.
    lateral = 0.4 * float(g.graph["context"]["lane_width"]) if kind == "road" else None
    patch = ground_patch(image, cam, boxes, rng, lateral=lateral)
    if patch is not None:
        tex, side = patch
        context[role] = (_write(root, f"{stem}_{role}", tex), 1.0 / (context_uv_scale(kind, role) * side))
    return TargetLook(objects, context)


def _write(root: Path, stem: str, rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    atomic.write_bytes(Path(root) / f"{stem}.png", buf.tobytes())
    return stem
