"""Exact per-pixel and per-object labels from `Fragments` at the output resolution.

All reductions are exact and order-independent (integer scatter-adds, or byte tables marked with
`True` where duplicate writes write the same value), so labels are the same on every run.

- depth: camera z of the visible surface, meters (+inf = no surface).
- instance: per image 1-based instance id (`SceneBatch.inst_local`), 0 = background.
- semantic: category id of the instance, 0 = background.
- visible: pixels of each instance in the instance mask.
- box: tight (x1, y1, x2, y2) around the visible pixels, exclusive right/bottom edge, from per-instance
  row and column occupancy tables; agrees with the mask by construction.
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

from .batch import SceneBatch
from .raster import Fragments, ScreenTriangles, coverage, kernel


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
    tri_group = batch.tri_instance[tris.face]
    # instances whose projected triangles leave the image need the enlarged canvas (truncation);
    # the others are counted on the image alone (cheaper): each instance is in exactly one pass
    sel = tri_group >= 0
    xy = tris.xyz[..., :2]
    leaves = sel & ((xy[..., 0].amin(1) < 0) | (xy[..., 1].amin(1) < 0) | (xy[..., 0].amax(1) > w)
                    | (xy[..., 1].amax(1) > h))
    crossing = torch.zeros(g + 1, dtype=torch.bool, device=xy.device)  # [g]: background, stays False
    crossing[tri_group[leaves]] = True  # every write is True: deterministic
    in_cross = crossing[torch.where(sel, tri_group, g)]
    crossing = crossing[:g]
    alone_img, _ = coverage(tris, torch.where(sel & ~in_cross, tri_group, -1), g, h, w, 0, 0, compiled=compiled)
    alone_canvas = alone_img
    if bool(crossing.any()):
        img2, canvas2 = coverage(tris, torch.where(in_cross, tri_group, -1), g, h, w, w // 2, h // 2,
                                 compiled=compiled)
        alone_img = torch.where(crossing, img2, alone_img)
        alone_canvas = torch.where(crossing, canvas2, alone_canvas)
    gd, row_slot, col_slot = kernel(_label_slots, compiled)(frag.pix_to_face, batch.tri_instance, g)
    # per (instance, row) and (instance, column) pixel counts: integer scatter-adds, exact and
    # order-independent; background pixels go to one dump row per image (spread, no hot address)
    n = row_slot.numel()
    one = torch.ones(1, dtype=torch.int64, device=gd.device).expand(n)
    rows = torch.zeros((g + b) * h, dtype=torch.int64, device=gd.device).scatter_add_(0, row_slot.view(-1), one)
    cols = torch.zeros((g + b) * w, dtype=torch.int64, device=gd.device).scatter_add_(0, col_slot.view(-1), one)
    out = kernel(_pixel_labels, compiled)(gd, rows, cols, batch.inst_local, batch.inst_category,
                                          alone_img, alone_canvas, g, int(min_visible_pixels))
    instance, semantic, visible, box, occl, trunc, kept = out
    return Labels(frag.zbuf, instance, semantic, visible, box, occl, trunc, kept)


def _label_slots(pix_to_face, tri_instance, g: int):
    """Per pixel (B, H, W): global instance or g for background (gd), and its slot in the
    per-instance row table ((G + B) x H, background -> dump row G + image) and column table."""
    b, h, w = pix_to_face.shape
    dev = pix_to_face.device
    f = pix_to_face
    gi = torch.where(f >= 0, tri_instance[f.clamp(min=0)], torch.full_like(f, -1))  # global instance
    fg = gi >= 0
    scene = torch.arange(b, device=dev).view(b, 1, 1)
    slot = torch.where(fg, gi, g + scene)
    row = torch.arange(h, device=dev).view(1, h, 1)
    col = torch.arange(w, device=dev).view(1, 1, w)
    return torch.where(fg, gi, torch.full_like(gi, g)), slot * h + row, slot * w + col


def _pixel_labels(gd, rows, cols, inst_local, inst_category, alone_img, alone_canvas, g: int,
                  min_visible_pixels: int):
    b, h, w = gd.shape
    dev = gd.device
    rows = rows.view(g + b, h)[:g]
    cols = cols.view(g + b, w)[:g]
    visible = rows.sum(1)
    rows, cols = rows > 0, cols > 0
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    big = 1 << 30
    y1 = torch.where(rows, ar_h, big).amin(1) if g else torch.zeros(0, dtype=torch.int64, device=dev)
    y2 = torch.where(rows, ar_h + 1, -big).amax(1) if g else y1
    x1 = torch.where(cols, ar_w, big).amin(1) if g else y1
    x2 = torch.where(cols, ar_w + 1, -big).amax(1) if g else y1
    box = torch.stack([x1, y1, x2, y2], 1)
    box = torch.where((visible > 0)[:, None], box, torch.zeros_like(box))

    occl = 1.0 - visible.float() / alone_img.clamp(min=1).float()
    occl = torch.where(alone_img > 0, occl.clamp(0.0, 1.0), torch.zeros_like(occl))
    trunc = 1.0 - alone_img.float() / alone_canvas.clamp(min=1).float()
    trunc = torch.where(alone_canvas > 0, trunc.clamp(0.0, 1.0), torch.zeros_like(trunc))

    kept = visible >= max(int(min_visible_pixels), 1)
    # a dummy row at index g (background) keeps the gathers valid also when g == 0
    kept_x = torch.cat([kept, kept.new_zeros(1)])
    local_x = torch.cat([inst_local, inst_local.new_zeros(1)])
    cat_x = torch.cat([inst_category, inst_category.new_zeros(1)])
    keep_px = kept_x[gd]
    instance = torch.where(keep_px, local_x[gd], torch.zeros_like(gd)).to(torch.int32)
    semantic = torch.where(keep_px, cat_x[gd], torch.zeros_like(gd)).to(torch.uint8)
    return instance, semantic, visible, box, occl, trunc, kept
