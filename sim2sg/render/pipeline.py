"""The renderer's entry points: in-memory `SceneData` (`sim2sg.render.scene`) -> labelled `Sample`s.

    camera (`shade.view_triangles`) -> rasterize (`raster.rasterize` -> `Fragments`)
      -> shade (`shade.shade`, with `shade.shadow_maps`) -> label (`labels.compute_labels`)
      -> post-process (`post.apply_post`) -> host `Sample`s.

Labels always come from a rasterization at the output resolution (pixel centres), also when the
image is supersampled, so masks, boxes and depth are exact for the output pixels. Rendering takes no
randomness; only post-processing does, from (options.seed, sample name). Reading USD files is
upstream (`sim2sg.usd.read.load_scene`; `sim2sg.dataset.render_job.render_stages` does both), so
this module works without pxr.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from sim2sg.render.batch import SceneBatch, pack
from sim2sg.render.kernels import kernel
from sim2sg.render.labels import Labels, compute_labels
from sim2sg.render.post import PostProcess, apply_post  # noqa: F401  (PostProcess: RenderOptions.post)
from sim2sg.render.raster import Fragments, rasterize
from sim2sg.render.sample import ObjectLabel, Sample
from sim2sg.render.scene import SceneData
from sim2sg.render.shade import finish, shade_fast, shadow_maps, view_triangles
from sim2sg.scene import graph as graphlib


@dataclass(frozen=True)
class RenderOptions:
    """width, height: output pixels. ssaa: supersampling factor per axis (1 = off). shadows: key
    light shadow map. min_visible_pixels: objects with fewer visible pixels are dropped (with their
    relations and their mask pixels). post: appearance post-processing or None. seed: its randomness
    (per image from (seed, name)). shadow_size: shadow-map resolution, 0 = automatic
    (sqrt(width * height) * ssaa rounded up to 32, at least 256). compile: run the arithmetic through `torch.compile`
    (first call per shape family compiles for tens of seconds; several times faster afterwards)."""

    width: int
    height: int
    ssaa: int = 1
    shadows: bool = True
    min_visible_pixels: int = 1
    post: "PostProcess | None" = None
    seed: int = 0
    shadow_size: int = 0
    compile: bool = False


@dataclass(frozen=True)
class RenderResult:
    """Batched device tensors of one render (before the host copy): image (B, H, W, 3) float sRGB in
    [0, 1]; labels (`Labels`); frag (output-resolution `Fragments`)."""

    image: torch.Tensor
    labels: Labels
    frag: Fragments


def _intrinsics(scenes: Sequence[SceneData], device) -> torch.Tensor:
    """(B, 4) float32 (fx, fy, cx, cy) in pixels of the scenes' cameras."""
    return torch.tensor([(s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy) for s in scenes],
                        dtype=torch.float32, device=device)


@torch.no_grad()
def render_batch(batch: SceneBatch, k: torch.Tensor, options: RenderOptions, names: Sequence[str] | None = None,
                 timer=None) -> RenderResult:
    """Render a packed batch with intrinsics k (B, 4) = (fx, fy, cx, cy) at the output size.

    timer: optional callable(stage_name) called after each stage (the benchmark's breakdown; it may
    synchronise the device).
    """
    tick = timer or (lambda name: None)
    b, w, h, s = batch.batch, options.width, options.height, max(int(options.ssaa), 1)
    c = bool(options.compile)
    tris = view_triangles(batch, k, compiled=c)
    frag = rasterize(tris, b, h, w, zmin=batch.near, zmax=batch.far, compiled=c)
    ks = k * s
    if s > 1:
        tris_s = view_triangles(batch, ks, compiled=c)
        frag_img = rasterize(tris_s, b, h * s, w * s, zmin=batch.near, zmax=batch.far, compiled=c)
    else:
        frag_img = frag
    tick("rasterize")
    shadows = None
    if options.shadows and bool((batch.key_rgb > 0).any()):
        # as many texels as image pixels (at least 256^2): cost scales like the main pass
        size = options.shadow_size or max(256, int(math.ceil(math.sqrt(w * h) * s / 32.0)) * 32)
        shadows = shadow_maps(batch, size, compiled=c)
        tick("shadows")
    textured = batch.tex_data.shape[0] > 1  # index 0 is the built-in white texel
    color = shade_fast(batch, frag_img.pix_to_face, frag_img.bary_coords, frag_img.zbuf, ks, shadows, textured, c)
    image = kernel(finish, c)(color, s)
    tick("shade")
    labels = compute_labels(batch, frag, tris, options.min_visible_pixels, compiled=c)
    tick("labels")
    if options.post is not None:
        image = apply_post(image, names if names is not None else [str(i) for i in range(b)], options.post, options.seed)
        tick("post")
    return RenderResult(image, labels, frag)


def _object_placement(scene: SceneData, inst: int):
    """(position bottom-centre, yaw, size) of instance `inst` (0-based) from its graph node, else
    from the world axis-aligned box of its triangles."""
    oid = int(scene.inst_object_id[inst])
    g = scene.graph
    if g is not None and oid in g.nodes:
        a = g.nodes[oid]
        return tuple(a["position"]), float(a["yaw"]), tuple(a["size"])
    pts = scene.tri_pos[scene.tri_instance == inst + 1].reshape(-1, 3)
    lo, hi = pts.min(0).astype(float), pts.max(0).astype(float)
    return ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]), 0.0, tuple(hi - lo)


def _scene_info(scene: SceneData):
    """Per-instance constants of a scene: [(object_id, category, category_id, position, yaw, size)]."""
    out = []
    for j in range(scene.num_instances):
        pos, yaw, size = _object_placement(scene, j)
        cat_id = int(scene.inst_category_id[j])
        out.append((int(scene.inst_object_id[j]), scene.categories[cat_id - 1], cat_id,
                    tuple(float(v) for v in pos), float(yaw), tuple(float(v) for v in size)))
    return out


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] float image -> uint8 (round half up); one fused pass when compiled."""
    return (image * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)


def to_samples(scenes: Sequence[SceneData], names: Sequence[str], result: RenderResult, options: RenderOptions) -> list[Sample]:
    """Copy a `RenderResult` to the host and build one `Sample` per scene."""
    lab = result.labels
    image = kernel(_to_uint8, bool(options.compile))(result.image).cpu().numpy()
    depth = lab.depth.cpu().numpy()
    instance = lab.instance.cpu().numpy()
    semantic = lab.semantic.cpu().numpy()
    # one host copy and one list conversion per label array (per-element tensor access is slow)
    visible = lab.visible.tolist()
    box = lab.box.to(torch.float64).tolist()
    occl = lab.occlusion.tolist()
    trunc = lab.truncation.tolist()
    kept = lab.kept.tolist()
    info: dict[int, list] = {}  # batches often repeat a scene (tiling, training loops)
    rel_cache: dict[int, list] = {}
    out = []
    g0 = 0
    for i, (sc, name) in enumerate(zip(scenes, names)):
        key = id(sc)
        if key not in info:
            info[key] = _scene_info(sc)
            rel_cache[key] = graphlib.relations(sc.graph) if sc.graph is not None else []
        objs = []
        for j, (oid, cat, cat_id, pos, yaw, size) in enumerate(info[key]):
            gi = g0 + j
            if kept[gi]:
                objs.append(ObjectLabel(j + 1, oid, cat, cat_id, tuple(box[gi]), visible[gi], occl[gi], trunc[gi],
                                        pos, yaw, size))
        g0 += sc.num_instances
        ids = {o.object_id for o in objs}
        rels = tuple((s_, p, o) for s_, p, o in rel_cache[key] if s_ in ids and o in ids)
        out.append(Sample(image=image[i], depth=depth[i], instance=instance[i], semantic=semantic[i],
                          objects=tuple(objs), relations=rels, camera=sc.camera,
                          graph=sc.graph, categories=tuple(sc.categories), predicates=tuple(sc.predicates),
                          name=str(name), skipped=tuple(sc.skipped)))
    return out


@torch.no_grad()
def render_scenes(scenes: Sequence[SceneData], names: Sequence[str], options: RenderOptions,
                  device: torch.device | str = "cpu") -> list[Sample]:
    """Render in-memory scenes (one batch) on `device`; no disk round trip. names: Sample names.
    Every scene's camera must have the options' size (`load_scene(path, width, height)`)."""
    if len(scenes) != len(names):
        raise ValueError("scenes and names differ in length")
    for sc, name in zip(scenes, names):
        if (sc.camera.width, sc.camera.height) != (options.width, options.height):
            raise ValueError(f"{name}: camera is {sc.camera.width}x{sc.camera.height}, "
                             f"options ask for {options.width}x{options.height}")
    if not scenes:
        return []
    batch = pack(scenes, device)
    k = _intrinsics(scenes, batch.cam_rot.device)
    result = render_batch(batch, k, options, names)
    return to_samples(scenes, names, result, options)

