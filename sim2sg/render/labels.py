"""Exact per-pixel and per-object labels from `Fragments` at the output resolution.

All reductions are exact and order-independent (integer sums and min/max, or byte tables where
duplicate writes write the same value), so labels are the same on every run.

- depth: camera z of the visible surface, meters (+inf = no surface).
- instance: per image 1-based instance id (`SceneBatch.inst_local`), 0 = background.
- semantic: category id of the instance, 0 = background.
- visible: pixels of each instance in the instance mask.
- box: tight (x1, y1, x2, y2) around the visible pixels, exclusive right/bottom edge; agrees with the
  mask by construction. Both come from the mask's horizontal runs of one instance (a run = row,
  first and last column), not from a per-pixel scatter.
- occlusion: 1 - visible / pixels the instance covers alone in the image (a second coverage pass of
  the instance's triangles without depth test).
- truncation: 1 - (alone pixels inside the image) / (alone pixels on a canvas enlarged by half the
  image size on every side); the enlarged pass runs only for instances whose projected triangles
  leave the image (0 for the others). An object reaching beyond that canvas, or crossing the
  camera's near plane, is under-estimated (its silhouette there is cut); for objects within 1.5
  image widths of the frame it is exact to the pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sim2sg.render.batch import SceneBatch
from sim2sg.render.coverage import coverage
from sim2sg.render.kernels import gather_bound, kernel
from sim2sg.render.raster import Fragments, ScreenTriangles


@dataclass(frozen=True)
class Labels:
    """Batched labels. depth (B, H, W) float32 m; instance (B, H, W) int32; semantic (B, H, W) uint8;
    per global instance (G,): visible int64, box (G, 4) int64 (x1, y1, x2, y2; zeros if not visible),
    occlusion float32, truncation float32, kept bool (visible >= min_visible_pixels).
    Instances not kept are erased from instance/semantic (pixels become 0)."""

    depth: torch.Tensor
    instance: torch.Tensor
    semantic: torch.Tensor
    visible: torch.Tensor
    box: torch.Tensor
    occlusion: torch.Tensor
    truncation: torch.Tensor
    kept: torch.Tensor


def compute_labels(batch: SceneBatch, frag: Fragments, tris: ScreenTriangles, min_visible_pixels: int = 1,
                   compiled: bool = False) -> Labels:
    """Labels of `frag` (rasterized from `tris` at the output size) for the scenes of `batch`."""
    b, h, w = frag.pix_to_face.shape
    g = batch.instances
    # instances whose projected triangles leave the image need the enlarged canvas (truncation);
    # the others are counted on the image alone (cheaper): each instance is in exactly one pass
    crossing, group_img, group_cross = kernel(_crossing, compiled)(tris.face, tris.xyz, batch.tri_instance, g, h, w)
    alone_img, _ = coverage(tris, group_img, g, h, w, 0, 0, compiled=compiled)
    alone_canvas = alone_img
    if bool(crossing.any()):
        img2, canvas2 = coverage(tris, group_cross, g, h, w, w // 2, h // 2, compiled=compiled)
        alone_img = torch.where(crossing, img2, alone_img)
        alone_canvas = torch.where(crossing, canvas2, alone_canvas)
    min_vis = max(int(min_visible_pixels), 1)
    gd, instance, semantic = kernel(_pixel_instances, compiled)(frag.pix_to_face, batch.tri_instance,
                                                                batch.inst_local, batch.inst_category, g)
    # visible counts and boxes from the horizontal runs of one instance (a few per object and row,
    # ~50x fewer than pixels) instead of a scatter per pixel: only the runs' first and last pixels
    # are compacted (a flat index each, with a code: 1 = first, 2 = last, 3 = both)
    code = kernel(_run_ends, compiled)(gd, g)
    mark = torch.nonzero(code.view(-1)).squeeze(1)
    out = kernel(_run_labels, compiled)(mark, code.view(-1), gd.view(-1), alone_img, alone_canvas, g, h, w, min_vis)
    visible, box, occl, trunc, kept = out
    if min_vis > 1:  # objects with a few visible pixels are dropped: erase their mask pixels
        keep_x = torch.cat([kept, kept.new_zeros(1)])
        instance, semantic = kernel(_erase_dropped, compiled)(gd, keep_x, instance, semantic)
    return Labels(frag.zbuf, instance, semantic, visible, box, occl, trunc, kept)


@gather_bound
def _crossing(face, xyz, tri_instance, g: int, h: int, w: int):
    """Which instances have a projected triangle leaving the h x w image: crossing (G,) bool, and
    per screen triangle (T',) int64 its instance for the image-only coverage pass (-1 for
    background and crossing instances) and for the enlarged-canvas pass (-1 unless crossing).
    One kernel instead of ~20 eager ops over the triangles."""
    tri_group = tri_instance[face]
    sel = tri_group >= 0
    xy = xyz[..., :2]
    leaves = sel & ((xy[..., 0].amin(1) < 0) | (xy[..., 1].amin(1) < 0) | (xy[..., 0].amax(1) > w)
                    | (xy[..., 1].amax(1) > h))
    # slot g: background (never written, stays False); slot g + 1: where the other triangles write
    crossing = torch.zeros(g + 2, dtype=torch.bool, device=xy.device)
    crossing = crossing.index_put((torch.where(leaves, tri_group, g + 1),), torch.ones_like(leaves))  # all True: deterministic
    in_cross = crossing[torch.where(sel, tri_group, g)]
    none = torch.full_like(tri_group, -1)
    return crossing[:g], torch.where(sel & ~in_cross, tri_group, none), torch.where(in_cross, tri_group, none)


@gather_bound
def _pixel_instances(pix_to_face, tri_instance, inst_local, inst_category, g: int):
    """Per pixel (B, H, W): global instance (int32, g = background), instance (int32 1-based local
    id, 0 = background) and semantic (uint8 category id). Every instance with a pixel is kept when
    min_visible_pixels <= 1; `_erase_dropped` handles larger thresholds."""
    f = pix_to_face
    gi = torch.where(f >= 0, tri_instance[f.clamp(min=0)], torch.full_like(f, -1))
    gd = torch.where(gi >= 0, gi, torch.full_like(gi, g))
    # a dummy row at index g (background) keeps the gathers valid also when g == 0
    local_x = torch.cat([inst_local, inst_local.new_zeros(1)])
    cat_x = torch.cat([inst_category, inst_category.new_zeros(1)])
    return gd.to(torch.int32), local_x[gd].to(torch.int32), cat_x[gd].to(torch.uint8)


def _run_ends(gd, g: int):
    """(B, H, W) uint8: 1 on the first pixel of each horizontal run of one instance, 2 on its last,
    3 on a one-pixel run, 0 elsewhere (and on background). A separate kernel from
    `_pixel_instances` so the neighbours are loads of `gd`, not recomputed gathers; integer
    `where`s, not bool masks: inductor's CPU code for bool stores and mask arithmetic was 2x slower."""
    left = torch.nn.functional.pad(gd[..., :-1], (1, 0), value=g)
    right = torch.nn.functional.pad(gd[..., 1:], (0, 1), value=g)
    one, zero = torch.ones_like(gd), torch.zeros_like(gd)
    c = torch.where(gd != left, one, zero) + torch.where(gd != right, 2 * one, zero)
    return torch.where(gd != g, c, zero).to(torch.uint8)


@gather_bound
def _run_labels(mark, code, gd, alone_img, alone_canvas, g: int, h: int, w: int, min_visible_pixels: int):
    """Per global instance (G,) from the run ends (`mark` (N,) flat pixel indices where the flat
    `code` of `_run_ends` is non-zero; any order): visible int64, box (G, 4) int64, occlusion,
    truncation, kept. A run from column a to b adds (b + 1) - a pixels: summed per end, so the
    first and last pixel of a run need not be paired."""
    dev = mark.device
    c = code[mark]
    gr = gd[mark].to(torch.int64)
    x = mark % w
    y = torch.div(mark, w, rounding_mode="floor") % h
    is_first, is_last = (c & 1) != 0, (c & 2) != 0
    zero = torch.zeros_like(x)
    big = 1 << 30
    visible = torch.zeros(g, dtype=torch.int64, device=dev).index_add_(
        0, gr, torch.where(is_last, x + 1, zero) - torch.where(is_first, x, zero))
    lo = torch.full((g,), big, dtype=torch.int64, device=dev)
    hi = torch.full((g,), -big, dtype=torch.int64, device=dev)
    box = torch.stack([lo.scatter_reduce(0, gr, torch.where(is_first, x, big), "amin"),
                       lo.scatter_reduce(0, gr, y, "amin"),
                       hi.scatter_reduce(0, gr, torch.where(is_last, x + 1, -big), "amax"),
                       hi.scatter_reduce(0, gr, y + 1, "amax")], 1)
    box = torch.where((visible > 0)[:, None], box, torch.zeros_like(box))

    occl = 1.0 - visible.float() / alone_img.clamp(min=1).float()
    occl = torch.where(alone_img > 0, occl.clamp(0.0, 1.0), torch.zeros_like(occl))
    trunc = 1.0 - alone_img.float() / alone_canvas.clamp(min=1).float()
    trunc = torch.where(alone_canvas > 0, trunc.clamp(0.0, 1.0), torch.zeros_like(trunc))
    kept = visible >= min_visible_pixels
    return visible, box, occl, trunc, kept


def _erase_dropped(gd, keep_x, instance, semantic):
    """Set instance / semantic (B, H, W) to 0 on the pixels whose global instance gd is not kept
    (keep_x (G + 1,) bool, False at index G = background)."""
    keep_px = keep_x[gd]
    return (torch.where(keep_px, instance, torch.zeros_like(instance)),
            torch.where(keep_px, semantic, torch.zeros_like(semantic)))
