"""Pack several `SceneData` into one set of device tensors (a `SceneBatch`).

Triangles, materials, textures and instances of all scenes are concatenated; per-triangle
`tri_scene` says which image a triangle belongs to, and indices (material, texture, instance) are
offset to be global within the batch. Textures are uploaded once per device and kept in a small
cache keyed by their file path, so a training loop re-rendering the same assets does not copy them
again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from sim2sg.render.scene import SceneData

_TEXTURE_CACHE: "OrderedDict[tuple[str, str], torch.Tensor]" = OrderedDict()
_TEXTURE_CACHE_SIZE = 256


def _texture(key: str, img: np.ndarray, device: torch.device) -> torch.Tensor:
    k = (key, str(device))
    t = _TEXTURE_CACHE.get(k)
    if t is None:
        t = torch.from_numpy(np.array(img, dtype=np.float32, copy=True)).to(device).reshape(-1, 3)
        _TEXTURE_CACHE[k] = t
        if len(_TEXTURE_CACHE) > _TEXTURE_CACHE_SIZE:
            _TEXTURE_CACHE.popitem(last=False)
    else:
        _TEXTURE_CACHE.move_to_end(k)
    return t


@dataclass(frozen=True)
class SceneBatch:
    """B scenes packed on one device. World frame +Z up, meters; float32 unless noted.

    Triangles (T): tri_pos (T, 3, 3), tri_normal (T, 3, 3), tri_uv (T, 3, 2); tri_material (T,)
      int64 global material; tri_instance (T,) int64 global instance index, -1 = background;
      tri_scene (T,) int64 image index.
    Materials (M): mat_color (M, 3) linear; mat_roughness, mat_metallic (M,); mat_texture (M,) int64
      global texture or -1; mat_wrap (M, 2) int64.
    Textures (K): tex_data (N, 3) linear RGB of all textures concatenated row-major; tex_offset,
      tex_width, tex_height (K,) int64 (K >= 1: a 1x1 white texture is always present).
    Per image (B): cam_rot (B, 3, 3) world-to-camera rows; cam_pos (B, 3); near, far (B,);
      ambient (B, 3); key_dir (B, 3) direction the key light travels (the brightest distant light),
      key_rgb (B, 3) its radiance (0 without one); fill_dir (B, L, 3), fill_rgb (B, L, 3) other
      distant lights (zero padded; L may be 0); sph_pos (B, S, 3), sph_rgb (B, S, 3), sph_radius (B, S) (S may be 0).
    Instances (G): inst_scene (G,) int64 image, inst_local (G,) int64 1-based id within its image,
      inst_category (G,) int64 category id.
    """

    tri_pos: torch.Tensor
    tri_normal: torch.Tensor
    tri_uv: torch.Tensor
    tri_material: torch.Tensor
    tri_instance: torch.Tensor
    tri_scene: torch.Tensor
    mat_color: torch.Tensor
    mat_roughness: torch.Tensor
    mat_metallic: torch.Tensor
    mat_texture: torch.Tensor
    mat_wrap: torch.Tensor
    tex_data: torch.Tensor
    tex_offset: torch.Tensor
    tex_width: torch.Tensor
    tex_height: torch.Tensor
    cam_rot: torch.Tensor
    cam_pos: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor
    ambient: torch.Tensor
    key_dir: torch.Tensor
    key_rgb: torch.Tensor
    fill_dir: torch.Tensor
    fill_rgb: torch.Tensor
    sph_pos: torch.Tensor
    sph_rgb: torch.Tensor
    sph_radius: torch.Tensor
    inst_scene: torch.Tensor
    inst_local: torch.Tensor
    inst_category: torch.Tensor

    @property
    def batch(self) -> int:
        return int(self.cam_rot.shape[0])

    @property
    def instances(self) -> int:
        return int(self.inst_scene.shape[0])


def pack(scenes: Sequence[SceneData], device: torch.device | str = "cpu") -> SceneBatch:
    """Concatenate `scenes` into one `SceneBatch` on `device` (one host-to-device copy per array)."""
    device = torch.device(device)
    ntri = np.array([len(s.tri_pos) for s in scenes])
    nmat = np.array([len(s.mat_color) for s in scenes])
    ninst = np.array([s.num_instances for s in scenes])
    mat_off = np.concatenate([[0], np.cumsum(nmat)[:-1]])
    inst_off = np.concatenate([[0], np.cumsum(ninst)[:-1]])

    # textures: index 0 is a white 1x1 texel; scene textures follow, deduplicated by key
    tex_keys: dict[str, int] = {}
    tex_list = [torch.ones(1, 3, device=device)]
    tex_w, tex_h = [1], [1]
    mat_tex = []
    for s in scenes:
        local = []
        for key, img in zip(s.texture_keys, s.textures):
            if key not in tex_keys:
                tex_keys[key] = len(tex_list)
                tex_list.append(_texture(key, img, device))
                tex_h.append(img.shape[0]); tex_w.append(img.shape[1])
            local.append(tex_keys[key])
        local = np.asarray(local + [-1], dtype=np.int64)
        mat_tex.append(np.where(s.mat_texture >= 0, local[s.mat_texture], -1))
    sizes = np.array([t.shape[0] for t in tex_list])
    tex_off = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def fill(getter_dir, getter_rgb, n_max, skip_key):
        d = np.zeros((len(scenes), n_max, 3), np.float32)
        c = np.zeros_like(d)
        for i, s in enumerate(scenes):
            dirs, rgbs = getter_dir(s), getter_rgb(s)
            order = [j for j in range(len(dirs)) if not (skip_key and j == _key_index(s))]
            for k, j in enumerate(order):
                d[i, k], c[i, k] = dirs[j], rgbs[j]
        return d, c

    key_dir = np.zeros((len(scenes), 3), np.float32)
    key_dir[:, 2] = -1.0
    key_rgb = np.zeros((len(scenes), 3), np.float32)
    for i, s in enumerate(scenes):
        k = _key_index(s)
        if k is not None:
            key_dir[i], key_rgb[i] = s.distant_dir[k], s.distant_rgb[k]
    nfill = max([max(len(s.distant_dir) - 1, 0) for s in scenes] + [0])
    fill_dir, fill_rgb = fill(lambda s: s.distant_dir, lambda s: s.distant_rgb, nfill, True)
    nsph = max([len(s.sphere_pos) for s in scenes] + [0])
    sph_pos, sph_rgb = fill(lambda s: s.sphere_pos, lambda s: s.sphere_rgb, nsph, False)
    sph_rad = np.zeros((len(scenes), nsph), np.float32)
    for i, s in enumerate(scenes):
        sph_rad[i, :len(s.sphere_radius)] = s.sphere_radius

    t = lambda a, dt=torch.float32: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dt)
    cat = np.concatenate
    tri_inst = cat([np.where(s.tri_instance > 0, s.tri_instance.astype(np.int64) - 1 + o, -1)
                    for s, o in zip(scenes, inst_off)])
    return SceneBatch(
        tri_pos=t(cat([s.tri_pos for s in scenes])),
        tri_normal=t(cat([s.tri_normal for s in scenes])),
        tri_uv=t(cat([s.tri_uv for s in scenes])),
        tri_material=t(cat([s.tri_material.astype(np.int64) + o for s, o in zip(scenes, mat_off)]), torch.int64),
        tri_instance=t(tri_inst, torch.int64),
        tri_scene=t(np.repeat(np.arange(len(scenes)), ntri), torch.int64),
        mat_color=t(cat([s.mat_color for s in scenes])),
        mat_roughness=t(cat([s.mat_roughness for s in scenes])),
        mat_metallic=t(cat([s.mat_metallic for s in scenes])),
        mat_texture=t(cat(mat_tex), torch.int64),
        mat_wrap=t(cat([s.mat_wrap for s in scenes]), torch.int64),
        tex_data=torch.cat(tex_list) if len(tex_list) > 1 else tex_list[0],
        tex_offset=t(tex_off, torch.int64), tex_width=t(tex_w, torch.int64), tex_height=t(tex_h, torch.int64),
        cam_rot=t(np.stack([s.camera.rotation() for s in scenes])),
        cam_pos=t(np.stack([np.asarray(s.camera.position, dtype=np.float64) for s in scenes])),
        near=t(np.array([s.camera.near for s in scenes])), far=t(np.array([s.camera.far for s in scenes])),
        ambient=t(np.stack([s.ambient for s in scenes])),
        key_dir=t(key_dir), key_rgb=t(key_rgb), fill_dir=t(fill_dir), fill_rgb=t(fill_rgb),
        sph_pos=t(sph_pos), sph_rgb=t(sph_rgb), sph_radius=t(sph_rad),
        inst_scene=t(np.repeat(np.arange(len(scenes)), ninst), torch.int64),
        inst_local=t(cat([np.arange(1, n + 1) for n in ninst] + [np.zeros(0, np.int64)]), torch.int64),
        inst_category=t(cat([s.inst_category_id for s in scenes] + [np.zeros(0, np.int32)]), torch.int64),
    )


def _key_index(s: SceneData) -> int | None:
    """The key light: the brightest distant light (it casts the shadows)."""
    if len(s.distant_rgb) == 0:
        return None
    return int(np.argmax(s.distant_rgb.sum(1)))
