"""Pixels each group of triangles (an instance) covers alone, without a depth test, on the image
and on a canvas enlarged by a margin: the labels' occlusion (covered alone vs visible) and
truncation (on the canvas vs on the image). Same candidates as the rasterizer
(`sim2sg.render.raster.candidates`), counted exactly with a byte table instead of a depth buffer.

Frames: screen pixels as in `sim2sg.render.raster` (x right, y down, origin at the top-left
corner of the image; the canvas's origin is `margin_x`, `margin_y` pixels further out).
"""

from __future__ import annotations

import torch

from sim2sg.render.kernels import gather_bound, kernel

# the rasterizer's own edge functions and candidate pixels (one definition of what a triangle covers)
from sim2sg.render.raster import (
    ScreenTriangles,
    _edge_coefficients,
    _pixels,
    candidates,
)

_SCRATCH = 4096  # scratch cells for rejected candidates in `coverage`


def _cover_table(coef, cand, grp, g_lo_x, g_lo_y, g_w, g_off, margin_x: int, margin_y: int,
                 height: int, width: int, dump: int):
    """The coverage byte table (dump + _SCRATCH,): each candidate inside its triangle marks its
    cell of the per-group bounding-box table with 2 (inside the image) or 1 (outside it); the
    others write to scratch cells after `dump`. Every write to a cell writes the same value.

    The store indices and values keep the candidates' (S, seg) shape: inductor then fuses the
    `index_put_` into the loop that computes them (a flattened index was materialised first, two
    int64 arrays of 16 bytes per candidate written and read back)."""
    tri, px, py, lane = _pixels(*cand)
    fx = (px - margin_x).to(torch.float32) + 0.5
    fy = (py - margin_y).to(torch.float32) + 0.5
    c = coef[tri]
    w0 = c[..., 0, 0] * fx + c[..., 0, 1] * fy + c[..., 0, 2]
    w1 = c[..., 1, 0] * fx + c[..., 1, 1] * fy + c[..., 1, 2]
    inside = lane & (w0 >= 0) & (w1 >= 0) & (1.0 - w0 - w1 >= 0)
    g = grp[tri]
    cell = g_off[g] + (py - g_lo_y[g]) * g_w[g] + (px - g_lo_x[g])
    in_img = (px >= margin_x) & (px < margin_x + width) & (py >= margin_y) & (py < margin_y + height)
    # rejected candidates go to a spread-out scratch area after the table: on a GPU, millions of
    # stores to one address would serialise (px, py >= 0 and _SCRATCH a power of two: & is the
    # remainder, without an integer division per candidate)
    scratch = dump + ((px + py * 131) & (_SCRATCH - 1))
    flat = torch.where(inside, cell, scratch)
    val = torch.where(in_img, 2, 1).to(torch.uint8).expand(inside.shape)
    table = torch.zeros(dump + _SCRATCH, dtype=torch.uint8, device=coef.device)
    return table.index_put_((flat,), val)


@gather_bound
def _cover_table_narrow(*args):
    """`_cover_table` as scalar code, for segments narrower than 8: the vector loop over a
    segment's lanes then fills at most 4 of 16 float lanes (AVX-512) and scalar code was faster
    (driving 640x192, seg 4: 3.7 -> 2.7 ms per batch); from seg 8 on the vector code wins
    (5.5 vs 7.1 ms). Same operations, so the same table."""
    return _cover_table(*args)


_COUNT_BLOCK = 256  # cells per block of `_table_counts`


def _table_counts(table, bounds, margins: bool):
    """Cells of the byte table (a multiple of _COUNT_BLOCK long, zero after the last group) that
    are marked (> 0) and marked inside the image (== 2) before each position of bounds (N,) int64:
    (before_canvas (N,), before_image (N,)) int64, exact integer counts.

    Per-block sums, a running sum over the blocks (~250x fewer than cells) and, per bound, the
    cells of its own block before it, instead of a running sum over every cell (two int64
    `cumsum`s over ~1M cells per driving batch took ~6 ms, single-threaded). Without margins
    every marked cell is in the image, so before_image is before_canvas."""
    blk = table.view(-1, _COUNT_BLOCK)
    zero = torch.zeros(1, dtype=torch.int64, device=table.device)
    j = torch.arange(_COUNT_BLOCK, device=table.device)
    q = torch.div(bounds, _COUNT_BLOCK, rounding_mode="floor")
    part = table[(q * _COUNT_BLOCK)[:, None] + j[None, :]]  # the bound's block (the table has a spare block)
    before = (j[None, :] < (bounds - q * _COUNT_BLOCK)[:, None])
    # cells hold 0, 1 or 2: min(t, 1) counts marked cells, t >> 1 those in the image; int32 sums
    # per block (exact, <= 256) vectorise twice as wide as int64 ones
    run = torch.cat([zero, torch.cumsum(blk.clamp(max=1).sum(1, dtype=torch.int32).to(torch.int64), 0)])
    canvas = run[q] + ((part > 0) & before).to(torch.int64).sum(1)
    if not margins:
        return canvas, canvas
    run2 = torch.cat([zero, torch.cumsum((blk >> 1).sum(1, dtype=torch.int32).to(torch.int64), 0)])
    return canvas, run2[q] + ((part == 2) & before).to(torch.int64).sum(1)


@gather_bound
def _group_boxes(xyz, grp, groups: int, margin_x: int, margin_y: int, hc: int, wc: int):
    """Per group (groups,) int64: pixel bounding box of its triangles xyz (T, 3, 3) (grp (T,) in
    [0, groups)) on the canvas (hc x wc, shifted by the margins; same rounding as `candidates`),
    as (lo_x, lo_y, width, cells = width x height, offset of its first cell in the table).
    One kernel around the aten scatters instead of ~25 eager ops."""
    xs, ys = xyz[..., 0] + margin_x, xyz[..., 1] + margin_y
    inf = torch.full((groups,), float("inf"), device=xyz.device)
    lo_x = inf.scatter_reduce(0, grp, xs.amin(1), "amin")
    hi_x = (-inf).scatter_reduce(0, grp, xs.amax(1), "amax")
    lo_y = inf.scatter_reduce(0, grp, ys.amin(1), "amin")
    hi_y = (-inf).scatter_reduce(0, grp, ys.amax(1), "amax")
    empty = ~torch.isfinite(lo_x)
    lo_x = torch.where(empty, 0.0, torch.ceil(lo_x - 0.5)).clamp(0, wc).to(torch.int64)
    hi_x = torch.where(empty, 0.0, torch.floor(hi_x - 0.5) + 1).clamp(0, wc).to(torch.int64)
    lo_y = torch.where(empty, 0.0, torch.ceil(lo_y - 0.5)).clamp(0, hc).to(torch.int64)
    hi_y = torch.where(empty, 0.0, torch.floor(hi_y - 0.5) + 1).clamp(0, hc).to(torch.int64)
    g_w = (hi_x - lo_x).clamp(min=0)
    cells = g_w * (hi_y - lo_y).clamp(min=0)
    return lo_x, lo_y, g_w, cells, torch.cumsum(cells, 0) - cells


def coverage(tris: ScreenTriangles, tri_group: torch.Tensor, groups: int, height: int, width: int,
             margin_x: int, margin_y: int, perspective: bool = True,
             compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels each group of triangles covers *alone* (no depth test), on the image and on a canvas
    enlarged by `margin_x` / `margin_y` pixels on every side.

    tri_group: (T',) int64 group (instance) index per triangle in [0, groups), -1 = ignore.
    Returns (in_image (groups,) int64, on_canvas (groups,) int64) pixel counts. A pixel covered by
    several triangles of a group counts once: each group gets a byte table over its screen bounding
    box (clamped to the canvas), candidates mark their cell with 2 (inside the image) or 1 (outside);
    every write to a cell writes the same value, so no atomics are needed and the result is exact.
    """
    sel = tri_group >= 0
    xyz, grp = tris.xyz[sel], tri_group[sel]
    hc, wc = height + 2 * margin_y, width + 2 * margin_x
    coef, valid = kernel(_edge_coefficients, compiled)(xyz, perspective)
    cand = candidates(xyz, coef, valid, hc, wc, -margin_x, -margin_y, compiled=compiled, seg=0)
    lo_x, lo_y, g_w, cells, g_off = kernel(_group_boxes, compiled)(xyz, grp, groups, margin_x, margin_y, hc, wc)
    total = int(cells.sum()) if groups else 0
    # the table proper is padded with zeros to whole count blocks past its end (the bound at its
    # end reads one block after it; no candidate writes there; the scratch cells follow)
    dump = (total // _COUNT_BLOCK + 1) * _COUNT_BLOCK
    narrow = cand[-1].shape[0] < 8
    table = kernel(_cover_table_narrow if narrow else _cover_table, compiled)(
        coef, cand, grp, lo_x, lo_y, g_w, g_off, margin_x, margin_y, height, width, dump)
    # each group's cells are one contiguous range of the table: counts are differences of the
    # marked cells before the range ends (integer, exact)
    bounds = torch.cat([g_off, g_off[-1:] + cells[-1:]])
    before_canvas, before_image = kernel(_table_counts, compiled)(table[:dump], bounds, margin_x != 0 or margin_y != 0)
    return before_image[1:] - before_image[:-1], before_canvas[1:] - before_canvas[:-1]
