"""The renderer's input: one scene as world-space numpy arrays (`SceneData`).

`sim2sg.usd.read.load_scene` produces it from any USD stage; nothing here imports pxr or torch, so
the renderer can be used (and tested) without USD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim2sg.scene.camera import Camera

# Texture wrap modes of `SceneData.mat_wrap` (UsdUVTexture wrapS / wrapT).
WRAP_REPEAT, WRAP_CLAMP, WRAP_MIRROR = 0, 1, 2


@dataclass(frozen=True)
class SceneData:
    """One stage as world-space triangle soup plus materials, lights, camera and instances.

    Triangles (F of them), world frame +Z up, meters:
      tri_pos (F, 3, 3) float32 corner positions; tri_normal (F, 3, 3) float32 unit corner normals
      (flat face normals where the stage has none); tri_uv (F, 3, 2) float32 texture coordinates
      (after any UsdTransform2d; zeros where absent); tri_material (F,) int32 index into mat_*;
      tri_instance (F,) int32, 0 = background, k = instance k (row k - 1 of inst_*).
    Materials (M):
      mat_color (M, 3) float32 linear diffuse colour (the texture tint when textured);
      mat_roughness, mat_metallic (M,) float32 in [0, 1]; mat_texture (M,) int32 index into
      `textures` or -1; mat_wrap (M, 2) int32 (s, t) wrap modes WRAP_REPEAT/CLAMP/MIRROR.
    textures: tuple of (h, w, 3) float32 linear-RGB images (row 0 = top, i.e. v = 1);
      texture_keys: their resolved file paths (cache keys).
    Lights: distant_dir (L, 3) unit direction the light travels; distant_rgb (L, 3) radiance;
      sphere_pos (S, 3) meters, sphere_radius (S,) meters, sphere_rgb (S, 3); ambient (3,) dome
      radiance (also the background colour).
    camera: the view, at the output image size (its rotation, position, near, far and intrinsics
      are what the renderer uses). Instances (N): inst_path (prim paths), inst_label (class names),
      inst_category_id (N,) int32 1-based into `categories`, inst_object_id (N,) int64 graph node id
      (instance index for foreign stages).
    categories, predicates: vocabularies (the stage's sim2sg lists, else sorted label names / ()).
    graph: the stage's scene graph (networkx) or None; env: environment name or None.
    source: the stage path.
    """

    tri_pos: np.ndarray
    tri_normal: np.ndarray
    tri_uv: np.ndarray
    tri_material: np.ndarray
    tri_instance: np.ndarray
    mat_color: np.ndarray
    mat_roughness: np.ndarray
    mat_metallic: np.ndarray
    mat_texture: np.ndarray
    mat_wrap: np.ndarray
    textures: tuple
    texture_keys: tuple
    distant_dir: np.ndarray
    distant_rgb: np.ndarray
    sphere_pos: np.ndarray
    sphere_radius: np.ndarray
    sphere_rgb: np.ndarray
    ambient: np.ndarray
    camera: Camera
    inst_path: tuple
    inst_label: tuple
    inst_category_id: np.ndarray
    inst_object_id: np.ndarray
    categories: tuple
    predicates: tuple
    graph: object = None
    env: str | None = None
    source: str = ""

    @property
    def num_instances(self) -> int:
        return len(self.inst_path)
