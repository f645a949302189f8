"""The renderer's input: one scene as world-space numpy arrays (`SceneData`).

`sim2sg.usd.read.load_scene` produces it from any USD stage; nothing here imports pxr or torch, so
the renderer can be used (and tested) without USD.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from sim2sg.errors import InputError
from sim2sg.scene import graph as graphlib
from sim2sg.scene.camera import Camera
from sim2sg.scene.relations import derive_relations

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
    skipped: (prim path, type name) of the stage's gprims the renderer cannot draw (curves,
      points, NURBS, point instancers, volumes): left out of the image and the labels.
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
    skipped: tuple = ()

    @property
    def num_instances(self) -> int:
        return len(self.inst_path)


def with_environment_relations(scene: SceneData, env) -> SceneData:
    """A stage without a sim2sg graph (`scene.graph is None`), given the rules of environment `env`
    (a `sim2sg.scene.environment.Environment`): the environment's vocabularies (category ids in
    its order), and a scene graph whose objects are the stage's labelled instances, each placed by
    the world axis-aligned box of its triangles (bottom centre, yaw 0, box size, meters), with the
    relations derived from 3D by the environment's rules (`sim2sg.scene.relations`), as the
    sampler derives them. A scene that has a graph is returned unchanged. Raises `InputError` when
    a class label of the stage is not one of the environment's categories."""
    if scene.graph is not None:
        return scene
    unknown = sorted(set(scene.inst_label) - set(env.categories))
    if unknown:
        raise InputError(scene.source, "semantics", f"class labels {unknown} are not in environment {env.name!r} "
                         f"(its categories: {list(env.categories)})")
    g = graphlib.new_graph(env.name, scene.camera, {})
    for j, label in enumerate(scene.inst_label):
        pts = scene.tri_pos[scene.tri_instance == j + 1].reshape(-1, 3).astype(np.float64)
        if len(pts) == 0:
            continue
        lo, hi = pts.min(0), pts.max(0)
        graphlib.add_object(g, int(scene.inst_object_id[j]), label, ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]),
                            0.0, tuple((hi - lo).tolist()))
    for s, p, o in derive_relations(graphlib.objects(g), scene.camera, env.predicates, env.relation_threshold,
                                    env.on_tolerance, env.require_category):
        graphlib.add_relation(g, s, p, o)
    cat_id = {c: i + 1 for i, c in enumerate(env.categories)}
    ids = np.asarray([cat_id[label] for label in scene.inst_label], dtype=np.int32)
    ids.setflags(write=False)
    return dataclasses.replace(scene, graph=g, env=env.name, categories=tuple(env.categories),
                               predicates=tuple(env.predicates), inst_category_id=ids)
