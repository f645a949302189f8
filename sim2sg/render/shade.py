"""Cameras, shadow maps and shading for a packed `SceneBatch`.

- `view_triangles`: world triangles -> camera frame -> near-clipped -> pixel coordinates.
- `shadow_maps`: orthographic depth maps from each image's key (distant) light, rendered with the
  same rasterizer (`raster.depth_map`: depth only); the map is fitted to the scene's bounding box
  seen from the light.
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

from sim2sg.render.batch import SceneBatch
from sim2sg.render.kernels import gather_bound, kernel
from sim2sg.render.raster import ScreenTriangles, clip_near, depth_map


@gather_bound
def _camera_corners(tri_pos, tri_scene, cam_pos, cam_rot, near, k):
    """Per triangle (T,): camera-frame corners cam (T, 3, 3) (OpenCV axes, meters), their pixel
    projection xyz (T, 3, 3) = (x px, y px, camera z) and the number of corners behind the near
    plane (T,) int64. One fused kernel over the triangles instead of ~20 eager ops.

    The rotation is written out as three products summed left to right, the order of the naive
    small-matrix `bmm` that `einsum` ran before (same float32 results); xyz is only meaningful for
    triangles with no corner behind (the others are clipped first)."""
    s = tri_scene
    c, r, kk = cam_pos[s], cam_rot[s], k[s]
    cam = _rotate([tri_pos[:, :, j] - c[:, None, j] for j in range(3)], r)
    nb = (cam[2] < near[s][:, None]).to(torch.int64).sum(1)
    x, y = _project(cam, kk)
    return torch.stack(cam, -1), torch.stack([x, y, cam[2]], -1), nb


def _rotate(v, r):
    """Components v = [x, y, z] (each (T, 3)) rotated by per-triangle r (T, 3, 3): r @ v, each
    output row summed left to right (the order of the small-matrix `einsum` this replaced, so
    float32 results are unchanged)."""
    return [v[0] * r[:, None, i, 0] + v[1] * r[:, None, i, 1] + v[2] * r[:, None, i, 2] for i in range(3)]


def _project(cam, kk):
    """Pinhole projection of camera-frame components cam = [x, y, z] (each (T, 3)) with per-triangle
    intrinsics kk (T, 4) = (fx, fy, cx, cy) -> pixel (x, y), each (T, 3)."""
    z = cam[2]
    return kk[:, None, 0] * cam[0] / z + kk[:, None, 2], kk[:, None, 1] * cam[1] / z + kk[:, None, 3]


def view_triangles(batch: SceneBatch, k: torch.Tensor, compiled: bool = False) -> ScreenTriangles:
    """Project the batch's triangles with per-image pinhole intrinsics k (B, 4) = (fx, fy, cx, cy).

    Returns near-clipped `ScreenTriangles` (x, y in pixels, depth = camera z in meters), in the order
    of `clip_near`: unclipped triangles first (original order), then the clipped ones' pieces.
    compiled: run the per-triangle arithmetic as one `torch.compile`d kernel.
    """
    s = batch.tri_scene
    cam, xyz, nb = kernel(_camera_corners, compiled)(batch.tri_pos, s, batch.cam_pos, batch.cam_rot, batch.near, k)
    # most triangles have no corner behind the near plane: their projection is final; only the few
    # others go through the (eager, data-dependent) clipping
    keep = torch.nonzero(nb == 0).squeeze(1)
    part = torch.nonzero(nb != 0).squeeze(1)
    eye = torch.eye(3, device=xyz.device, dtype=xyz.dtype).expand(keep.shape[0], 3, 3)
    if part.shape[0] == 0:
        return ScreenTriangles(xyz[keep], keep, eye.contiguous(), s[keep])
    cam_c, face_c, bary_c, scene_c = clip_near(cam[part], batch.near[s[part]], s[part])
    x, y = _project(cam_c.unbind(-1), k[scene_c])
    xyz_c = torch.stack([x, y, cam_c[..., 2]], -1)
    return ScreenTriangles(torch.cat([xyz[keep], xyz_c]), torch.cat([keep, part[face_c]]), torch.cat([eye, bary_c]),
                           torch.cat([s[keep], scene_c]))


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
    xyz, xf = kernel(_light_triangles, compiled)(batch.tri_pos, s, frame, b, size)
    depth = depth_map(xyz, s, b, size, size, perspective=False, compiled=compiled)
    return depth, frame, xf


@gather_bound
def _light_triangles(tri_pos, tri_scene, frame, b: int, size: int):
    """World triangles (T, 3, 3) -> shadow-map triangles (T, 3, 3) (x, y texels, depth) and the
    per-image map transform xf (B, 4) (see `shadow_maps`). One kernel for the per-triangle
    arithmetic (the per-image bounding box stays an aten scatter); the light-space rotation is
    summed left to right like the `einsum` it replaces (same float32 values)."""
    s = tri_scene
    lp = torch.stack(_rotate(tri_pos.unbind(-1), frame[s]), -1)  # (T, 3, 3) light space
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
    return torch.stack([xs, ys, zs], -1), xf


def _shadow_lookup(p, n, scene: torch.Tensor, smap, frame, xf) -> torch.Tensor:
    """Lit fraction in [0, 1] of world points p with normals n (each a list of three components x,
    y, z, any shape S) of images `scene` (S, or broadcastable to it)."""
    size = smap.shape[-1]
    xf = xf[scene]  # (..., 4) per point, or broadcast (B, 1, 1, 4) per image
    frame = frame[scene]
    scale = xf[..., 0]
    # offset along the normal by ~1.5 texels and compare with a 1-texel bias: no acne, little peter-panning
    texel = 1.0 / scale
    off = 1.5 * texel
    q = [p[c] + n[c] * off for c in range(3)]
    fr = frame  # component-wise dot products: one fused per-pixel loop under torch.compile
    l = [q[0] * fr[..., r, 0] + q[1] * fr[..., r, 1] + q[2] * fr[..., r, 2] for r in range(3)]
    u = (l[0] - xf[..., 1]) * scale - 0.5
    v = (l[1] - xf[..., 2]) * scale - 0.5
    d = l[2] - xf[..., 3] - texel
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


def _wrap(i: torch.Tensor, n: torch.Tensor, mode: torch.Tensor, plus: int = 0) -> torch.Tensor:
    """Texel index i + plus (i an integer-valued float) wrapped into [0, n): repeat (mode 0), clamp (1), mirror (2).

    Exact integer arithmetic in float64 (|i| < 2^53): the quotient's rounding is corrected by one
    step, so the result equals the int64 `remainder` form. Float division vectorises on CPUs where
    int64 division does not (it was a scalar loop per pixel); the result is cast to int64 once.
    Non-finite or huge i still give an index in [0, n) (NaN -> 0)."""
    i = i.double() + plus
    nf = n.double()
    rep = i - nf * torch.floor(i / nf)
    rep = torch.where(rep < 0, rep + nf, torch.where(rep >= nf, rep - nf, rep))
    n2 = 2.0 * nf
    m = i - n2 * torch.floor(i / n2)
    m = torch.where(m < 0, m + n2, torch.where(m >= n2, m - n2, m))
    clamp = i.clamp(min=0).minimum(nf - 1)
    mirror = torch.where(m < nf, m, n2 - 1 - m)
    out = torch.where(mode == 0, rep, torch.where(mode == 1, clamp, mirror))
    out = torch.where(out == out, out, torch.zeros_like(out)).clamp(min=0).minimum(nf - 1)  # no-op unless NaN/huge
    return out.long()


def _wrap_pair(i: torch.Tensor, n: torch.Tensor, mode: torch.Tensor):
    """(`_wrap(i, n, mode)`, `_wrap(i, n, mode, 1)`, exact (bool)) from one float32 remainder
    m = i mod 2n: repeat is m mod n, mirror folds m, and i + 1 has remainder m + 1 (mod 2n).

    Where exact (|i| < 2^22 and n <= 2^16) both indices equal `_wrap`'s: every step is exact
    integer arithmetic in float32 (products and differences stay below 2^24; the rounded quotient
    i / 2n is at most one too large, which the correction step fixes). Elsewhere (huge or
    non-finite i) the caller must use `_wrap`. One float32 division per axis instead of four
    float64 ones (`_wrap` twice per axis, two remainders each): ~15% of driving's shading time."""
    nf = n.to(torch.float32)
    n2 = 2.0 * nf
    m = i - n2 * torch.floor(i / n2)
    m = torch.where(m < 0, m + n2, torch.where(m >= n2, m - n2, m))
    m1 = torch.where(m + 1.0 >= n2, m + 1.0 - n2, m + 1.0)

    def pick(mm, ii):
        rep = torch.where(mm < nf, mm, mm - nf)
        mirror = torch.where(mm < nf, mm, n2 - 1 - mm)
        clamp = ii.clamp(min=0).minimum(nf - 1)
        return torch.where(mode == 0, rep, torch.where(mode == 1, clamp, mirror)).long()

    return pick(m, i), pick(m1, i + 1.0), (i.abs() < 2.0 ** 22) & (nf <= 2.0 ** 16)


def _sample_texture_c(batch: SceneBatch, tex, wrap_u, wrap_v, u, v, fast_wrap: bool = False):
    """`sample_texture` on components: (u, v) (P,) each -> (three (P,) linear channels, exact (P,)
    bool). fast_wrap: wrap with `_wrap_pair`, exact where it equals `_wrap`; else `_wrap` (exact
    everywhere)."""
    w, h, off = batch.tex_width[tex], batch.tex_height[tex], batch.tex_offset[tex]
    x = u * w - 0.5
    y = (1.0 - v) * h - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    if fast_wrap:
        xa, xb, ok_x = _wrap_pair(x0, w, wrap_u)
        ya, yb, ok_y = _wrap_pair(y0, h, wrap_v)
        exact = ok_x & ok_y
    else:
        xa, xb = _wrap(x0, w, wrap_u), _wrap(x0, w, wrap_u, 1)
        ya, yb = _wrap(y0, h, wrap_v), _wrap(y0, h, wrap_v, 1)
        exact = torch.ones_like(x0, dtype=torch.bool)
    t = batch.tex_data
    i00, i10, i01, i11 = off + ya * w + xa, off + ya * w + xb, off + yb * w + xa, off + yb * w + xb
    out = []
    for c in range(3):
        c00, c10, c01, c11 = t[i00, c], t[i10, c], t[i01, c], t[i11, c]
        out.append((c00 * (1 - fx) + c10 * fx) * (1 - fy) + (c01 * (1 - fx) + c11 * fx) * fy)
    return out, exact


def sample_texture(batch: SceneBatch, tex: torch.Tensor, wrap: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup: tex (P,) texture index (0 = white), wrap (P, 2), uv (P, 2) -> (P, 3) linear RGB.
    v = 1 is the top row of the image (USD convention)."""
    return torch.stack(_sample_texture_c(batch, tex, wrap[:, 0], wrap[:, 1], uv[:, 0], uv[:, 1])[0], -1)


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _normalize(a):
    s = torch.sqrt(_dot(a, a)).clamp(min=1e-12)
    return [a[0] / s, a[1] / s, a[2] / s]


def shade(batch: SceneBatch, pix_to_face: torch.Tensor, bary: torch.Tensor, zbuf: torch.Tensor, k: torch.Tensor,
          shadows=None, textured: bool = True) -> torch.Tensor:
    """Linear RGB (B, H, W, 3) of the fragments (pix_to_face (B, H, W), bary (B, H, W, 3), zbuf
    (B, H, W) camera z in meters) seen with intrinsics k (B, 4) = (fx, fy, cx, cy) at this size.
    World positions come from the depth and the pixel ray (3 multiply-adds instead of gathering and
    blending the 9 corner coordinates).

    Every per-pixel quantity is kept as separate (P,) x/y/z (or r/g/b) components, so that under
    torch.compile the whole function becomes one loop over pixels, vectorised across pixels (a
    (P, 3) layout gave 3-wide inner loops and several passes). The arithmetic and its order are the
    same as the vector form.

    shadows: None or the output of `shadow_maps` (key-light shadowing). textured: False skips the
    texture lookups (a batch without textures).
    """
    return _shade(batch, pix_to_face, bary, zbuf, k, shadows, textured, False)[0]


def shade_fast(batch: SceneBatch, pix_to_face: torch.Tensor, bary: torch.Tensor, zbuf: torch.Tensor,
               k: torch.Tensor, shadows=None, textured: bool = True, compiled: bool = False) -> torch.Tensor:
    """`shade`, bit for bit, with the cheaper texel wrap of `_wrap_pair` (float32, one remainder
    per axis) for every batch where that is exact (texel indices below 2^22, textures up to 2^16
    texels wide); a batch where it is not is shaded again by `shade` (one host sync for the
    flag). compiled: run it as a `torch.compile`d kernel."""
    color, inexact = kernel(_shade, compiled)(batch, pix_to_face, bary, zbuf, k, shadows, textured, True)
    if textured and bool(inexact):
        color = kernel(shade, compiled)(batch, pix_to_face, bary, zbuf, k, shadows, textured)
    return color


def _shade(batch: SceneBatch, pix_to_face: torch.Tensor, bary: torch.Tensor, zbuf: torch.Tensor, k: torch.Tensor,
           shadows, textured: bool, fast_wrap: bool):
    """`shade` -> (linear RGB (B, H, W, 3), inexact: 0-dim bool, True if fast_wrap was not exact
    for some pixel (see `_wrap_pair`); always False without fast_wrap)."""
    b, h, w = pix_to_face.shape
    dev = pix_to_face.device
    f = pix_to_face
    hit = f >= 0
    fc = f.clamp(min=0)
    b0, b1, b2 = bary[..., 0], bary[..., 1], bary[..., 2]
    # per-image values broadcast as (B, 1, 1): inside a compiled kernel they are loads with stride 0
    # over the pixels of an image (no per-pixel division to find the image, vectorisable)
    scene = torch.arange(b, device=dev).view(b, 1, 1)
    img = lambda t: t.reshape(b, *([1] * 2), *t.shape[1:])  # (B, ...) -> (B, 1, 1, ...)
    kk = img(k)
    rx = ((torch.arange(w, device=dev).to(torch.float32) + 0.5).view(1, 1, w) - kk[..., 2]) / kk[..., 0]
    ry = ((torch.arange(h, device=dev).to(torch.float32) + 0.5).view(1, h, 1) - kk[..., 3]) / kk[..., 1]
    rot = img(batch.cam_rot)  # rows: camera axes in world; world ray = R^T (rx, ry, 1)
    cpos = img(batch.cam_pos)
    z = torch.where(hit, zbuf, torch.zeros_like(zbuf))
    p = [cpos[..., c] + z * (rot[..., 0, c] * rx + rot[..., 1, c] * ry + rot[..., 2, c]) for c in range(3)]
    tn = batch.tri_normal[fc]
    n = _normalize([tn[..., 0, c] * b0 + tn[..., 1, c] * b1 + tn[..., 2, c] * b2 for c in range(3)])
    m = batch.tri_material[fc]
    view = _normalize([cpos[..., c] - p[c] for c in range(3)])
    # two-sided: a normal facing away from the camera is flipped (open meshes, planes)
    back = _dot(n, view) < 0
    n = [torch.where(back, -n[c], n[c]) for c in range(3)]
    mc = batch.mat_color[m]
    albedo = [mc[..., c] for c in range(3)]
    if textured:
        tuv = batch.tri_uv[fc]
        u = tuv[..., 0, 0] * b0 + tuv[..., 1, 0] * b1 + tuv[..., 2, 0] * b2
        v = tuv[..., 0, 1] * b0 + tuv[..., 1, 1] * b1 + tuv[..., 2, 1] * b2
        wrap = batch.mat_wrap[m]
        tc, exact = _sample_texture_c(batch, batch.mat_texture[m].clamp(min=0), wrap[..., 0], wrap[..., 1], u, v,
                                      fast_wrap)
        albedo = [albedo[c] * tc[c] for c in range(3)]
        inexact = ~exact.all()
    else:
        inexact = torch.zeros((), dtype=torch.bool, device=dev)
    metal = batch.mat_metallic[m]
    rough = batch.mat_roughness[m].clamp(0.05, 1.0)
    alpha = rough * rough
    expo = (2.0 / (alpha * alpha) - 2.0).clamp(1.0, 4096.0)
    diffuse = [albedo[c] * (1.0 - metal) for c in range(3)]
    f0 = [0.04 * (1.0 - metal) + albedo[c] * metal for c in range(3)]

    def light(ldir_to_light, radiance, vis=None):
        ndl = _dot(n, ldir_to_light).clamp(min=0.0)
        hv = _normalize([ldir_to_light[c] + view[c] for c in range(3)])
        ndh = _dot(n, hv).clamp(min=0.0)
        vdh = _dot(view, hv).clamp(min=0.0)
        out = []
        for c in range(3):
            fres = f0[c] + (1.0 - f0[c]) * (1.0 - vdh) ** 5
            spec = fres * (expo + 8.0) / 8.0 * ndh ** expo
            o = (diffuse[c] + spec) * ndl * radiance[c]
            out.append(o if vis is None else o * vis)
        return out

    vis = None
    if shadows is not None:
        vis = _shadow_lookup(p, n, scene, *shadows)
    kd = img(batch.key_dir)
    kr = img(batch.key_rgb)
    col = light([-kd[..., c] for c in range(3)], [kr[..., c] for c in range(3)], vis)
    for i in range(batch.fill_dir.shape[1]):  # a few lights per scene, padded with zero radiance
        fd, fr = img(batch.fill_dir[:, i]), img(batch.fill_rgb[:, i])
        add = light([-fd[..., c] for c in range(3)], [fr[..., c] for c in range(3)])
        col = [col[c] + add[c] for c in range(3)]
    for i in range(batch.sph_pos.shape[1]):
        sp = img(batch.sph_pos[:, i])
        to = [sp[..., c] - p[c] for c in range(3)]
        d2 = _dot(to, to).clamp(min=1e-8)
        d = d2.sqrt()
        r = img(batch.sph_radius[:, i])
        sr = img(batch.sph_rgb[:, i])
        att = torch.pi * r * r / d2
        add = light([to[c] / d for c in range(3)], [sr[..., c] * att for c in range(3)])
        col = [col[c] + add[c] for c in range(3)]
    amb = img(batch.ambient)
    col = [torch.where(hit, col[c] + amb[..., c] * (diffuse[c] + f0[c]), amb[..., c]) for c in range(3)]
    return torch.stack(col, -1), inexact


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
