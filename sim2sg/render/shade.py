"""Cameras, shadow maps and shading for a packed `SceneBatch`.

- `view_triangles`: world triangles -> camera frame -> near-clipped -> pixel coordinates.
- `shadow_maps`: orthographic depth maps from each image's key (distant) light, rendered with the
  same rasterizer; the map is fitted to the scene's bounding box seen from the light.
- `shade`: per pixel, perspective-correct attributes, bilinear texture lookup (wrap per material),
  Lambert diffuse plus normalised Blinn-Phong specular with Schlick Fresnel (the specular exponent
  from UsdPreviewSurface roughness, F0 from metallic, so metal and rubber differ), uniform dome
  ambient (diffuse + F0 reflection of the dome), sphere lights (inverse square), key-light shadows
  with 2x2 percentage-closer filtering. Output linear RGB; background = dome colour.

Radiometry convention (as Storm's simple lighting): a distant light of radiance E lights a white
Lambert surface facing it to value E (no 1/pi), so intensities around 1 give a well exposed image.
"""

from __future__ import annotations

import torch

from .batch import SceneBatch
from .raster import ScreenTriangles, clip_near, rasterize


def view_triangles(batch: SceneBatch, k: torch.Tensor) -> ScreenTriangles:
    """Project the batch's triangles with per-image pinhole intrinsics k (B, 4) = (fx, fy, cx, cy).

    Returns near-clipped `ScreenTriangles` (x, y in pixels, depth = camera z in meters).
    """
    s = batch.tri_scene
    cam = torch.einsum("tcj,tij->tci", batch.tri_pos - batch.cam_pos[s][:, None, :], batch.cam_rot[s])
    cam, face, bary, scene = clip_near(cam, batch.near[s], s)
    kk = k[scene]
    z = cam[..., 2]
    x = kk[:, None, 0] * cam[..., 0] / z + kk[:, None, 2]
    y = kk[:, None, 1] * cam[..., 1] / z + kk[:, None, 3]
    return ScreenTriangles(torch.stack([x, y, z], -1), face, bary, scene)


def _light_frame(d: torch.Tensor) -> torch.Tensor:
    """(B, 3) unit light directions -> (B, 3, 3) rotations whose rows are (x, y, z = d)."""
    up = torch.where((d[:, 2:3].abs() > 0.9), torch.tensor([1.0, 0.0, 0.0], device=d.device),
                     torch.tensor([0.0, 0.0, 1.0], device=d.device))
    x = torch.linalg.cross(up, d)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(d, x)
    return torch.stack([x, y, d], 1)


def shadow_maps(batch: SceneBatch, size: int, compiled: bool = False):
    """Orthographic key-light depth maps.

    Returns (depth (B, size, size) float32 light-space depth + offset, +inf where empty;
    frame (B, 3, 3) light rotation; xform (B, 4) = (scale, x0, y0, z0): map pixel = (l.xy - (x0, y0))
    * scale, map depth = l.z - z0, with l = frame @ world point).
    """
    b = batch.batch
    s = batch.tri_scene
    frame = _light_frame(batch.key_dir)
    lp = torch.einsum("tcj,tij->tci", batch.tri_pos, frame[s])  # (T, 3, 3) light space
    flat = lp.reshape(-1, 3)
    sc = s.repeat_interleave(3)
    big = torch.full((b, 3), float("inf"), device=lp.device)
    lo = big.scatter_reduce(0, sc[:, None].expand(-1, 3), flat, reduce="amin", include_self=True)
    hi = (-big).scatter_reduce(0, sc[:, None].expand(-1, 3), flat, reduce="amax", include_self=True)
    ext = (hi[:, :2] - lo[:, :2]).amax(1).clamp(min=1e-6)
    scale = (size - 2) / ext  # one texel of border
    x0 = lo[:, 0] - 1.0 / scale
    y0 = lo[:, 1] - 1.0 / scale
    z0 = lo[:, 2] - 1.0  # keep map depths > 0 (the z-buffer key needs positive floats)
    xf = torch.stack([scale, x0, y0, z0], 1)
    xs = (lp[..., 0] - x0[s][:, None]) * scale[s][:, None]
    ys = (lp[..., 1] - y0[s][:, None]) * scale[s][:, None]
    zs = lp[..., 2] - z0[s][:, None]
    eye = torch.eye(3, device=lp.device).expand(len(s), 3, 3)
    tris = ScreenTriangles(torch.stack([xs, ys, zs], -1), torch.arange(len(s), device=lp.device), eye, s)
    frag = rasterize(tris, b, size, size, perspective=False, compute_bary=False, compiled=compiled)
    return frag.zbuf, frame, xf


def _shadow_lookup(p: torch.Tensor, n: torch.Tensor, scene: torch.Tensor, smap, frame, xf) -> torch.Tensor:
    """Lit fraction in [0, 1] of world points p (P, 3) with normals n (P, 3) of images `scene` (P,)."""
    size = smap.shape[-1]
    scale = xf[scene, 0]
    # offset along the normal by ~1.5 texels and compare with a 1-texel bias: no acne, little peter-panning
    texel = 1.0 / scale
    q = p + n * (1.5 * texel)[:, None]
    fr = frame[scene]  # explicit dot products: fuses under torch.compile (einsum becomes a bmm)
    l = torch.stack([(q * fr[:, 0]).sum(-1), (q * fr[:, 1]).sum(-1), (q * fr[:, 2]).sum(-1)], -1)
    u = (l[:, 0] - xf[scene, 1]) * scale - 0.5
    v = (l[:, 1] - xf[scene, 2]) * scale - 0.5
    d = l[:, 2] - xf[scene, 3] - texel
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    u0, v0 = u0.long(), v0.long()
    flat = smap.reshape(-1)
    lit = torch.zeros_like(u)
    for du, dv, w in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        uu, vv = u0 + du, v0 + dv
        inside = (uu >= 0) & (uu < size) & (vv >= 0) & (vv < size)
        idx = (scene * size + vv.clamp(0, size - 1)) * size + uu.clamp(0, size - 1)
        occluder = flat[idx]
        lit = lit + w * torch.where(inside & (d > occluder), torch.zeros_like(u), torch.ones_like(u))
    return lit


def _wrap(i: torch.Tensor, n: torch.Tensor, mode: torch.Tensor) -> torch.Tensor:
    rep = torch.remainder(i, n)
    clamp = i.clamp(min=0).minimum(n - 1)
    m = torch.remainder(i, 2 * n)
    mirror = torch.where(m < n, m, 2 * n - 1 - m)
    return torch.where(mode == 0, rep, torch.where(mode == 1, clamp, mirror))


def sample_texture(batch: SceneBatch, tex: torch.Tensor, wrap: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup: tex (P,) texture index (0 = white), wrap (P, 2), uv (P, 2) -> (P, 3) linear RGB.
    v = 1 is the top row of the image (USD convention)."""
    w, h, off = batch.tex_width[tex], batch.tex_height[tex], batch.tex_offset[tex]
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    xa, xb = _wrap(x0, w, wrap[:, 0]), _wrap(x0 + 1, w, wrap[:, 0])
    ya, yb = _wrap(y0, h, wrap[:, 1]), _wrap(y0 + 1, h, wrap[:, 1])
    t = batch.tex_data
    c00, c10 = t[off + ya * w + xa], t[off + ya * w + xb]
    c01, c11 = t[off + yb * w + xa], t[off + yb * w + xb]
    return (c00 * (1 - fx) + c10 * fx) * (1 - fy) + (c01 * (1 - fx) + c11 * fx) * fy


def shade(batch: SceneBatch, pix_to_face: torch.Tensor, bary: torch.Tensor, zbuf: torch.Tensor, k: torch.Tensor,
          shadows=None, textured: bool = True) -> torch.Tensor:
    """Linear RGB (B, H, W, 3) of the fragments (pix_to_face (B, H, W), bary (B, H, W, 3), zbuf
    (B, H, W) camera z in meters) seen with intrinsics k (B, 4) = (fx, fy, cx, cy) at this size.
    World positions come from the depth and the pixel ray (3 multiply-adds instead of gathering and
    blending the 9 corner coordinates).

    shadows: None or the output of `shadow_maps` (key-light shadowing). textured: False skips the
    texture lookups (a batch without textures).
    """
    b, h, w = pix_to_face.shape
    f = pix_to_face.reshape(-1)
    hit = f >= 0
    fc = f.clamp(min=0)
    bc = bary.reshape(-1, 3, 1)
    scene = torch.arange(b, device=f.device).repeat_interleave(h * w)
    idx = torch.arange(b * h * w, device=f.device)
    kk = k[scene]
    rx = ((idx % w).to(torch.float32) + 0.5 - kk[:, 2]) / kk[:, 0]
    ry = ((torch.div(idx, w, rounding_mode="floor") % h).to(torch.float32) + 0.5 - kk[:, 3]) / kk[:, 1]
    rot = batch.cam_rot[scene]  # rows: camera axes in world; world ray = R^T (rx, ry, 1)
    z = torch.where(hit, zbuf.reshape(-1), torch.zeros_like(rx))
    p = batch.cam_pos[scene] + z[:, None] * (rot[:, 0] * rx[:, None] + rot[:, 1] * ry[:, None] + rot[:, 2])
    n = (batch.tri_normal[fc] * bc).sum(1)
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    m = batch.tri_material[fc]
    view = batch.cam_pos[scene] - p
    view = view / view.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    # two-sided: a normal facing away from the camera is flipped (open meshes, planes)
    n = torch.where(((n * view).sum(-1, keepdim=True) < 0), -n, n)
    tex = batch.mat_texture[m]
    albedo = batch.mat_color[m]
    if textured:
        uv = (batch.tri_uv[fc] * bc).sum(1)
        albedo = albedo * sample_texture(batch, tex.clamp(min=0), batch.mat_wrap[m], uv)
    metal = batch.mat_metallic[m][:, None]
    rough = batch.mat_roughness[m].clamp(0.05, 1.0)
    alpha = rough * rough
    expo = (2.0 / (alpha * alpha) - 2.0).clamp(1.0, 4096.0)[:, None]
    diffuse = albedo * (1.0 - metal)
    f0 = 0.04 * (1.0 - metal) + albedo * metal

    def light(ldir_to_light, radiance, vis=None):
        ndl = (n * ldir_to_light).sum(-1, keepdim=True).clamp(min=0.0)
        hv = ldir_to_light + view
        hv = hv / hv.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        ndh = (n * hv).sum(-1, keepdim=True).clamp(min=0.0)
        vdh = (view * hv).sum(-1, keepdim=True).clamp(min=0.0)
        fres = f0 + (1.0 - f0) * (1.0 - vdh) ** 5
        spec = fres * (expo + 8.0) / 8.0 * ndh ** expo
        out = (diffuse + spec) * ndl * radiance
        return out if vis is None else out * vis[:, None]

    vis = None
    if shadows is not None:
        vis = _shadow_lookup(p, n, scene, *shadows)
    col = light(-batch.key_dir[scene], batch.key_rgb[scene], vis)
    for i in range(batch.fill_dir.shape[1]):  # a few lights per scene, padded with zero radiance
        col = col + light(-batch.fill_dir[scene, i], batch.fill_rgb[scene, i])
    for i in range(batch.sph_pos.shape[1]):
        to = batch.sph_pos[scene, i] - p
        d2 = (to * to).sum(-1, keepdim=True).clamp(min=1e-8)
        r = batch.sph_radius[scene, i][:, None]
        col = col + light(to / d2.sqrt(), batch.sph_rgb[scene, i] * (torch.pi * r * r / d2))
    amb = batch.ambient[scene]
    col = col + amb * (diffuse + f0)
    col = torch.where(hit[:, None], col, amb)
    return col.view(b, h, w, 3)


def finish(color: torch.Tensor, ssaa: int) -> torch.Tensor:
    """(B, H*s, W*s, 3) linear -> (B, H, W, 3) sRGB in [0, 1]: box-filter the s x s subsamples, encode."""
    if ssaa > 1:
        b, hs, ws, _ = color.shape
        color = color.view(b, hs // ssaa, ssaa, ws // ssaa, ssaa, 3).mean((2, 4))
    return linear_to_srgb(color)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear RGB -> sRGB-encoded values in [0, 1] (input clamped to [0, 1])."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)
