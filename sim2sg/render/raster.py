"""Batched triangle rasterization in plain torch (same code on CPU and CUDA).

Scenes of a batch have different triangle counts, so triangles are *packed*: one (T, ...) tensor for
the whole batch plus `tri_scene` (T,), the image each triangle belongs to.

Method (no Python loop over pixels or triangles): every triangle enumerates, row by row of its
screen bounding box, the pixel centres of its span on that row (see `candidates`); an edge-function
test keeps those inside; depth and triangle index are packed
into one int64 key (float32 depth bits, positive floats order like their bits, in the high word; the
triangle index in the low word) and `scatter_reduce(amin)` keeps the nearest per pixel. amin over
int64 is exact, so the result does not depend on the order the atomics run in: same input, same
output, also on CUDA. Ties in depth go to the lower triangle index.

Frames: screen coordinates are pixels (x right, y down, origin at the top-left image corner; pixel
(i, j) is sampled at its centre (j + 0.5, i + 0.5)); depth is camera z in meters for perspective
views, light-space depth for orthographic shadow maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sim2sg.render.kernels import gather_bound, kernel

_NO_HIT = torch.iinfo(torch.int64).max
_NO_DEPTH = torch.iinfo(torch.int32).max  # `depth_map`'s empty pixel (above every finite float's bits)


@dataclass(frozen=True)
class Fragments:
    """One surface sample per pixel (the nearest).

    pix_to_face: (B, H, W) int64 index of the visible triangle in the *original* packed triangle
      list (before near-plane clipping), -1 where nothing is hit.
    zbuf: (B, H, W) float32 depth of the visible surface (camera z, meters), +inf where nothing.
    bary_coords: (B, H, W, 3) float32 barycentric weights of that triangle's three corners at the
      pixel centre, perspective-correct for perspective views; 0 where nothing is hit.
    """

    pix_to_face: torch.Tensor
    zbuf: torch.Tensor
    bary_coords: torch.Tensor


@dataclass(frozen=True)
class ScreenTriangles:
    """Triangles ready to rasterize, after projection and near-plane clipping.

    xyz: (T', 3, 3) float32 per corner (x px, y px, depth). face: (T',) int64 original triangle.
    bary: (T', 3, 3) float32, row k = weights of corner k over the original triangle's corners
      (identity for unclipped triangles). scene: (T',) int64 image index.
    """

    xyz: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    scene: torch.Tensor


def clip_near(cam: torch.Tensor, near: torch.Tensor, tri_scene: torch.Tensor):
    """Clip camera-space triangles against the plane z = near (per triangle).

    cam: (T, 3, 3) camera-frame corners (OpenCV axes, meters). near: (T,) per-triangle near distance.
    Returns (cam' (T', 3, 3), face (T',), bary (T', 3, 3), scene (T',)): triangles fully behind are
    dropped, triangles with one corner behind become two, with two corners behind one. Winding is
    kept. `bary` rows express each new corner over the original corners, so attributes are looked up
    on the original triangle.
    """
    dev = cam.device
    behind = cam[..., 2] < near[:, None]
    nb = behind.sum(1)
    eye = torch.eye(3, device=dev, dtype=cam.dtype)
    keep = nb == 0
    out_cam = [cam[keep]]
    out_face = [torch.nonzero(keep).squeeze(1)]
    out_bary = [eye.expand(int(out_face[0].numel()), 3, 3)]
    for count in (1, 2):
        sel = torch.nonzero(nb == count).squeeze(1)
        if sel.numel() == 0:
            continue
        c = cam[sel]
        b = behind[sel]
        # rotate the corners so that the odd one out (behind for count 1, in front for 2) is first
        odd = b if count == 1 else ~b
        first = odd.to(torch.int64).argmax(1)
        perm = (first[:, None] + torch.arange(3, device=dev)[None, :]) % 3  # (n, 3)
        cp = torch.gather(c, 1, perm[:, :, None].expand(-1, 3, 3))
        wp = eye[perm]  # (n, 3, 3) one-hot weights of the rotated corners
        n_ = near[sel][:, None]
        za, zb, zc = cp[:, 0, 2:3], cp[:, 1, 2:3], cp[:, 2, 2:3]
        tab = (n_ - za) / (zb - za)
        tac = (n_ - za) / (zc - za)
        pab = cp[:, 0] + tab * (cp[:, 1] - cp[:, 0])
        pac = cp[:, 0] + tac * (cp[:, 2] - cp[:, 0])
        wab = wp[:, 0] + tab * (wp[:, 1] - wp[:, 0])
        wac = wp[:, 0] + tac * (wp[:, 2] - wp[:, 0])
        if count == 1:  # corner a behind: quad (ab, b, c, ac) -> (ab, b, c) + (ab, c, ac)
            out_cam += [torch.stack([pab, cp[:, 1], cp[:, 2]], 1), torch.stack([pab, cp[:, 2], pac], 1)]
            out_bary += [torch.stack([wab, wp[:, 1], wp[:, 2]], 1), torch.stack([wab, wp[:, 2], wac], 1)]
            out_face += [sel, sel]
        else:  # only corner a in front: (a, ab, ac)
            out_cam.append(torch.stack([cp[:, 0], pab, pac], 1))
            out_bary.append(torch.stack([wp[:, 0], wab, wac], 1))
            out_face.append(sel)
    face = torch.cat(out_face)
    return torch.cat(out_cam), face, torch.cat(out_bary), tri_scene[face]


def _edge_coefficients(xyz: torch.Tensor, perspective: bool):
    """Per-triangle linear forms over the screen: (T, 3, 3) rows [w0, w1, q] as (A, B, C), value at
    (x, y) = A x + B y + C. w0, w1 are screen-space barycentrics (w2 = 1 - w0 - w1); q is 1/z for
    perspective (linear in screen space) or z for orthographic. Also returns a (T,) validity mask
    (non-degenerate on screen)."""
    # float64: corners just past the near plane project far outside the image (1e5+ px), where the
    # float32 products below would cancel badly; T is small, so this costs nothing
    xyz64 = xyz.double()
    x, y, z = xyz64[..., 0], xyz64[..., 1], xyz64[..., 2]
    x0, x1, x2 = x.unbind(1)
    y0, y1, y2 = y.unbind(1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    valid = area.abs() > 1e-9
    inv = torch.where(valid, 1.0 / torch.where(valid, area, torch.ones_like(area)), torch.zeros_like(area))
    a0, b0, c0 = (y1 - y2) * inv, (x2 - x1) * inv, (x1 * y2 - x2 * y1) * inv
    a1, b1, c1 = (y2 - y0) * inv, (x0 - x2) * inv, (x2 * y0 - x0 * y2) * inv
    q = 1.0 / z if perspective else z
    q0, q1, q2 = q.unbind(1)
    # q(x, y) = w0 q0 + w1 q1 + (1 - w0 - w1) q2
    aq = a0 * (q0 - q2) + a1 * (q1 - q2)
    bq = b0 * (q0 - q2) + b1 * (q1 - q2)
    cq = c0 * (q0 - q2) + c1 * (q1 - q2) + q2
    # one flat stack, each component cast on its own: a stack of stacks made inductor write three
    # float64 intermediates and re-read them in four loops (0.87 -> 0.38 ms for 37k triangles)
    coef = torch.stack([t.float() for t in (a0, b0, c0, a1, b1, c1, aq, bq, cq)], -1)
    return coef.view(-1, 3, 3), valid


def _owners(counts: torch.Tensor, total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`repeat_interleave(arange(len(counts)), counts)` and the start offsets, via one cumsum.

    Each item marks its start position; the running count of marks at position k, started at -1, is
    the owner of k (empty items mark the same position as their successor and are overtaken). Several times
    faster than repeat_interleave on CPU, and integer index_add is exact on every device.
    total: counts.sum() when the caller already has it on the host (saves a device sync).
    """
    start = torch.cumsum(counts, 0) - counts
    if total is None:
        total = int(counts.sum()) if counts.numel() else 0
    marks = torch.zeros(total + 1, dtype=torch.int64, device=counts.device)
    marks[0] = -1  # the running count starts at -1: the cumsum is the owner itself (no extra pass)
    marks.index_add_(0, start, torch.ones_like(start))
    return torch.cumsum(marks[:total], 0), start


def _row_spans(coef, row_tri, tri_start, lo_x, hi_x, lo_y, x0: int, y0: int):
    """Per bounding-box row: (first candidate column, canvas row, candidate count).

    The three edges are separate (R,) components combined with maximum / minimum (same values as
    a stacked amax / amin): inductor then emits one vectorised loop over rows instead of 3-wide
    inner reductions."""
    row_y = lo_y[row_tri] + torch.arange(row_tri.shape[0], device=row_tri.device) - tri_start[row_tri]
    c = coef[row_tri]
    fy = (row_y + y0).to(torch.float32) + 0.5
    a = [c[:, 0, 0], c[:, 1, 0], -c[:, 0, 0] - c[:, 1, 0]]
    v = [c[:, 0, 1] * fy + c[:, 0, 2], c[:, 1, 1] * fy + c[:, 1, 2],
         1.0 - (c[:, 0, 1] + c[:, 1, 1]) * fy - c[:, 0, 2] - c[:, 1, 2]]
    # edge i: a_i x + v_i >= 0 bounds x from below (a_i > 0) or above (a_i < 0)
    eps = 1e-12
    lo, hi, never = None, None, None
    for ai, vi in zip(a, v):
        safe = torch.where(ai.abs() > eps, ai, torch.ones_like(ai))
        root = (-vi / safe).clamp(-1e7, 1e7)
        lo_i = torch.where(ai > eps, root, torch.full_like(root, -1e7))
        hi_i = torch.where(ai < -eps, root, torch.full_like(root, 1e7))
        nv_i = (ai.abs() <= eps) & (vi < 0)
        lo = lo_i if lo is None else torch.maximum(lo, lo_i)
        hi = hi_i if hi is None else torch.minimum(hi, hi_i)
        never = nv_i if never is None else never | nv_i
    c_lo = torch.maximum(torch.ceil(lo - 0.5 - x0).to(torch.int64) - 1, lo_x[row_tri])
    c_hi = torch.minimum(torch.floor(hi - 0.5 - x0).to(torch.int64) + 2, hi_x[row_tri])
    row_w = torch.where(never, torch.zeros_like(c_lo), (c_hi - c_lo).clamp(min=0))
    return c_lo, row_y, row_w


def _tri_rows(xyz, valid, height: int, width: int, x0: int, y0: int):
    """Per triangle (T,) int64: clamped bounding box columns [lo_x, hi_x), first row lo_y and row
    count (0 for `valid` False or an empty box) on the canvas at (x0, y0). One fused kernel
    (min / max over the corners as separate components) instead of a dozen small eager ops."""
    xs = [xyz[:, k, 0] - x0 for k in range(3)]
    ys = [xyz[:, k, 1] - y0 for k in range(3)]
    # pixel j is sampled at j + 0.5: the covered columns are ceil(xmin - 0.5) .. floor(xmax - 0.5)
    lo_x = torch.ceil(torch.minimum(torch.minimum(xs[0], xs[1]), xs[2]) - 0.5).clamp(0, width).to(torch.int64)
    hi_x = (torch.floor(torch.maximum(torch.maximum(xs[0], xs[1]), xs[2]) - 0.5) + 1).clamp(0, width).to(torch.int64)
    lo_y = torch.ceil(torch.minimum(torch.minimum(ys[0], ys[1]), ys[2]) - 0.5).clamp(0, height).to(torch.int64)
    hi_y = (torch.floor(torch.maximum(torch.maximum(ys[0], ys[1]), ys[2]) - 0.5) + 1).clamp(0, height).to(torch.int64)
    nrow = torch.where(valid & (hi_x > lo_x), (hi_y - lo_y).clamp(min=0), torch.zeros_like(lo_y))
    return lo_x, hi_x, lo_y, nrow


def candidates(xyz: torch.Tensor, coef: torch.Tensor, valid: torch.Tensor, height: int, width: int,
               x0: int = 0, y0: int = 0, compiled: bool = False, seg: int = 1):
    """Pixel candidates of each triangle on the canvas [x0, x0+width) x [y0, y0+height) (image pixels).

    Two levels, both vectorised: each triangle yields the rows of its bounding box, each row the
    columns of the triangle's exact span on that row (from the edge functions, widened by one pixel
    against rounding; the inside test decides). Thin or diagonal triangles (roads, walls in
    perspective) thus cost about their area, not their bounding box.

    xyz: (T, 3, 3) screen corners; coef: (T, 3, 3) from `_edge_coefficients`. Returns the tuple
    `cand` = (seg_row (S,), seg_start, row_x, row_y, row_tri, row_w (R,), lanes (seg,)) that
    `_pixels` expands into (tri, px, py, lane_ok) canvas indices of shape (S, seg): each row's span
    is cut into segments of `seg` consecutive columns (the last one padded, `lane_ok` False there),
    so per-row values are loaded once per segment (seg = 1: one candidate per pixel of the span;
    seg = 0: chosen from the mean span width, see `_segment_width`). The result does not depend on
    seg: padding lanes never hit.
    Triangles with `valid` False give none.
    """
    lo_x, hi_x, lo_y, nrow = kernel(_tri_rows, compiled)(xyz, valid, height, width, x0, y0)
    row_tri, tri_start = _owners(nrow)
    c_lo, row_y, row_w = kernel(_row_spans, compiled)(coef, row_tri, tri_start, lo_x, hi_x, lo_y, x0, y0)
    total = None
    if seg == 0:
        seg, total = _segment_width(row_w, compiled)
    nseg = row_w if seg == 1 else torch.div(row_w + (seg - 1), seg, rounding_mode="floor")
    srow, seg_start = _owners(nseg, total)
    return srow, seg_start, c_lo, row_y, row_tri, row_w, torch.arange(seg, device=xyz.device)


_SEGMENTS = (1, 4, 8, 16)  # the segment widths `_segment_width` chooses from


@gather_bound
def _span_stats(row_w):
    """(6,) int64: total span width, non-empty rows, and the segment count for each width in
    `_SEGMENTS` (sum of ceil(row_w / seg)). One fused reduction over the rows."""
    out = [row_w.sum(), (row_w > 0).sum()]
    out += [torch.div(row_w + (s - 1), s, rounding_mode="floor").sum() for s in _SEGMENTS]
    return torch.stack(out)


def _segment_width(row_w: torch.Tensor, compiled: bool = False) -> tuple[int, int]:
    """(seg, segment count) for spans of mean width m (pixels, over non-empty rows): seg 1 below
    2, 4 below 6, 8 below 32, else 16. Wider segments waste padding lanes but load the per-row
    values once per segment instead of once per pixel (gathers dominate the per-candidate cost).
    Measured on a 2-core CPU (clevr 256x256): main pass m ~ 9 -> 8, shadow map m ~ 62 -> 16,
    coverage m ~ 2.7 -> 4.

    The segment counts of every candidate width come back with the mean in one host transfer, so
    `_owners` needs no second device sync for its total (one sync per candidate pass less on CUDA)."""
    total, rows, *counts = kernel(_span_stats, compiled)(row_w).tolist()
    m = total / max(rows, 1)
    seg = 1 if m < 2 else (4 if m < 6 else (8 if m < 32 else 16))
    return seg, counts[_SEGMENTS.index(seg)]


def _pixels(srow, seg_start, row_x, row_y, row_tri, row_w, lanes):
    """Expand `candidates` output: (tri (S, 1), px (S, seg), py (S, 1), lane_ok (S, seg)) canvas
    pixel indices. Padding lanes (lane_ok False) get the row's first column (a valid pixel)."""
    seg = lanes.shape[0]
    k = ((torch.arange(srow.shape[0], device=srow.device) - seg_start[srow]) * seg)[:, None] + lanes[None, :]
    ok = k < row_w[srow][:, None]
    x = row_x[srow][:, None]
    return row_tri[srow][:, None], torch.where(ok, x + k, x), row_y[srow][:, None], ok


_CHUNK_LANES = 1 << 20  # candidate lanes per `_keys` / scatter call (16 MiB of key + pixel arrays)


def _chunks(cand, lanes: int | None = None):
    """`candidates` output cut into consecutive runs of whole segments, at most `lanes` candidate
    lanes each (default `_CHUNK_LANES`; at least one segment), in the same `cand` form.

    Per chunk the key and pixel arrays are at most 16 x lanes bytes. Unchunked, a driving batch
    of 16 (5.2M lanes) allocated two 42 MB arrays per call: above glibc's largest mmap threshold
    (32 MiB) every such block is a fresh mapping, so each batch page-faulted ~20k pages (~90 ms of
    system time per batch on a 2-core VM). Chunks reuse the heap; `amin` is exact and
    order-independent, so the z-buffer is the same. On a GPU (a caching allocator, no page faults;
    a batch of 2048 would be hundreds of chunks, each a kernel launch) the whole set is one chunk
    unless `lanes` is given."""
    srow, seg_start = cand[0], cand[1]
    if lanes is None and srow.device.type != "cpu":
        yield cand
        return
    n = max((lanes or _CHUNK_LANES) // cand[-1].shape[0], 1)
    if srow.shape[0] <= n:
        yield cand
        return
    for a in range(0, srow.shape[0], n):
        # `_pixels` numbers the segments from the chunk's first one: shift the row starts with it
        yield (srow[a:a + n], seg_start - a) + tuple(cand[2:])


def _candidate_depth(coef, cand, tri_scene, zmin, zmax, perspective: bool):
    """Candidates (S, seg) -> (ok (inside, in the depth range, not padding), depth z, tri (S, 1),
    scene (S, 1), px (S, seg), py (S, 1)). Shared by `_keys` and `_depth_keys`."""
    tri, px, py, lane = _pixels(*cand)
    fx = px.to(torch.float32) + 0.5
    fy = py.to(torch.float32) + 0.5
    c = coef[tri]
    w0 = c[..., 0, 0] * fx + c[..., 0, 1] * fy + c[..., 0, 2]
    w1 = c[..., 1, 0] * fx + c[..., 1, 1] * fy + c[..., 1, 2]
    q = c[..., 2, 0] * fx + c[..., 2, 1] * fy + c[..., 2, 2]
    z = 1.0 / q if perspective else q
    scene = tri_scene[tri]
    ok = (lane & (w0 >= 0) & (w1 >= 0) & (1.0 - w0 - w1 >= 0) & (z > 0) & (z >= zmin[scene])
          & (z <= zmax[scene]))
    return ok, z, tri, scene, px, py


def _keys(coef, cand, tri_scene, zmin, zmax, height: int, width: int, perspective: bool):
    """Candidate -> (int64 depth|triangle key or _NO_HIT, flat pixel index). Elementwise, fusable."""
    ok, z, tri, scene, px, py = _candidate_depth(coef, cand, tri_scene, zmin, zmax, perspective)
    zbits = z.view(torch.int32).to(torch.int64)
    key = torch.where(ok, (zbits << 32) | tri, torch.full_like(zbits, _NO_HIT))
    return key.reshape(-1), ((scene * height + py) * width + px).reshape(-1)


def _depth_keys(coef, cand, tri_scene, zmin, zmax, height: int, width: int, perspective: bool):
    """Candidate -> (int32 depth bits or _NO_DEPTH, flat pixel index): `_keys` without the triangle
    index, for maps that need the nearest depth only (the minimum of the bits is the depth the
    int64 key's high word would give)."""
    ok, z, _, scene, px, py = _candidate_depth(coef, cand, tri_scene, zmin, zmax, perspective)
    zbits = z.view(torch.int32)
    key = torch.where(ok, zbits, torch.full_like(zbits, _NO_DEPTH))
    return key.reshape(-1), ((scene * height + py) * width + px).reshape(-1)


@gather_bound
def _resolve(zb, coef, face_of, xyz, bary_of, height: int, width: int, perspective: bool, compute_bary: bool):
    """Winning keys (B, H, W) -> (face (B, H, W), depth (B, H, W), bary (B, H, W, 3) or empty).

    Pixel coordinates come from broadcast row / column ranges (no per-pixel division), so the
    compiled kernel is one loop vectorised along image rows."""
    hit = zb != _NO_HIT
    win = torch.where(hit, zb & 0xFFFFFFFF, torch.zeros_like(zb))
    depth = (zb >> 32).to(torch.int32).view(torch.float32)
    depth = torch.where(hit, depth, torch.full_like(depth, float("inf")))
    face = torch.where(hit, face_of[win], torch.full_like(win, -1))
    if not compute_bary:
        return face, depth, torch.empty(0, device=zb.device)
    cx = (torch.arange(width, device=zb.device).to(torch.float32) + 0.5).view(1, 1, width)
    cy = (torch.arange(height, device=zb.device).to(torch.float32) + 0.5).view(1, height, 1)
    c = coef[win]
    w0 = c[..., 0, 0] * cx + c[..., 0, 1] * cy + c[..., 0, 2]
    w1 = c[..., 1, 0] * cx + c[..., 1, 1] * cy + c[..., 1, 2]
    w2 = 1.0 - w0 - w1
    if perspective:  # perspective-correct: weight by 1/z of the corners, renormalise
        zc = xyz[win]
        w0, w1, w2 = w0 / zc[..., 0, 2], w1 / zc[..., 1, 2], w2 / zc[..., 2, 2]
        s = w0 + w1 + w2
        w0, w1, w2 = w0 / s, w1 / s, w2 / s
    m = bary_of[win]  # (B, H, W, 3, 3): sub-triangle corners over the original triangle's corners
    b = [w0 * m[..., 0, j] + w1 * m[..., 1, j] + w2 * m[..., 2, j] for j in range(3)]
    b = [torch.where(hit, bj, torch.zeros_like(bj)) for bj in b]
    return face, depth, torch.stack(b, -1)


def rasterize(tris: ScreenTriangles, batch: int, height: int, width: int, *, perspective: bool = True,
              zmin: torch.Tensor | None = None, zmax: torch.Tensor | None = None,
              compute_bary: bool = True, compiled: bool = False) -> Fragments:
    """Z-buffer `tris` into `batch` images of `height` x `width`.

    zmin, zmax: optional (batch,) depth range per image (clipping range); depths outside are
    rejected. For orthographic views depths must be > 0 (the int64 key needs positive floats).
    compute_bary: False skips barycentrics (shadow maps need depth only); bary_coords is then empty.
    compiled: run the per-candidate and per-pixel arithmetic through `torch.compile`.
    """
    dev = tris.xyz.device
    if tris.xyz.shape[0] == 0:  # nothing in front of the camera(s)
        return Fragments(torch.full((batch, height, width), -1, dtype=torch.int64, device=dev),
                         torch.full((batch, height, width), float("inf"), device=dev),
                         torch.zeros((batch, height, width, 3), device=dev) if compute_bary else torch.empty(0, device=dev))
    coef, valid = kernel(_edge_coefficients, compiled)(tris.xyz, perspective)
    cand = candidates(tris.xyz, coef, valid, height, width, compiled=compiled, seg=0)
    if zmin is None:
        zmin = torch.zeros(batch, device=dev)
    if zmax is None:
        zmax = torch.full((batch,), float("inf"), device=dev)
    zb = torch.full((batch * height * width,), _NO_HIT, dtype=torch.int64, device=dev)
    for part in _chunks(cand):
        key, pix = kernel(_keys, compiled)(coef, part, tris.scene, zmin, zmax, height, width, perspective)
        zb.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
        # dead before the next chunk's (same-sized) arrays are allocated: they reuse the memory
        del key, pix, part
    # the candidate arrays are dead: freed before `_resolve` allocates its outputs, which then
    # reuse that memory instead of growing the heap (on the CPU every new 4 KiB page is a page
    # fault: ~1 ms per 4 MB)
    del cand
    face, depth, bary = kernel(_resolve, compiled)(zb.view(batch, height, width), coef, tris.face, tris.xyz,
                                                   tris.bary, height, width, perspective, compute_bary)
    return Fragments(face, depth, bary)


def _depth_of(zb):
    """int32 depth bits (B, H, W) from `_depth_keys` -> float32 depth, +inf where nothing."""
    return torch.where(zb != _NO_DEPTH, zb.view(torch.float32), torch.full_like(zb.view(torch.float32), float("inf")))


def depth_map(xyz: torch.Tensor, scene: torch.Tensor, batch: int, height: int, width: int, *,
              perspective: bool = True, zmin: torch.Tensor | None = None, zmax: torch.Tensor | None = None,
              compiled: bool = False) -> torch.Tensor:
    """Nearest depth per pixel (B, H, W) float32, +inf where nothing: `rasterize(...).zbuf`, bit for
    bit, for triangles xyz (T, 3, 3) (x px, y px, depth) of images scene (T,) int64.

    Shadow maps need nothing else: the z-buffer holds the float32 depth bits alone (int32 `amin`;
    positive floats order like their bits), so there is no triangle index in the key, no per-pixel
    resolve gather, and half the scatter traffic. Arguments as in `rasterize`.
    """
    dev = xyz.device
    if xyz.shape[0] == 0:
        return torch.full((batch, height, width), float("inf"), device=dev)
    coef, valid = kernel(_edge_coefficients, compiled)(xyz, perspective)
    cand = candidates(xyz, coef, valid, height, width, compiled=compiled, seg=0)
    if zmin is None:
        zmin = torch.zeros(batch, device=dev)
    if zmax is None:
        zmax = torch.full((batch,), float("inf"), device=dev)
    zb = torch.full((batch * height * width,), _NO_DEPTH, dtype=torch.int32, device=dev)
    for part in _chunks(cand):
        key, pix = kernel(_depth_keys, compiled)(coef, part, scene, zmin, zmax, height, width, perspective)
        zb.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
        del key, pix, part
    del cand  # dead before the output is allocated (see `rasterize`)
    return kernel(_depth_of, compiled)(zb.view(batch, height, width))
