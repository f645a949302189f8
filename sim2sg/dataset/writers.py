"""Per-image dataset writers: a `Sample` in, files under an output directory out (atomically).

Always written (labels.json refers to them; see docs/formats.md):
  images/NNNNNN.png     8-bit RGB
  depth/NNNNNN.png      16-bit millimetres along the optical axis (0 = no surface, 65535 = 65.535 m
                        or farther)
  instances/NNNNNN.png  16-bit instance ids (0 = background)
  semantics/NNNNNN.png  8-bit category ids (0 = background)
Optional writers (names used by `sim2sg render --writers`):
  "sg"     scene_graphs/NNNNNN.json   the stage's graph restricted to the visible objects, boxes filled
  "kitti"  kitti/{image_2,label_2,calib}/NNNNNN.{png,txt}  (see `sim2sg.dataset.kitti`)
  "clevr"  clevr/scenes/NNNNNN.json   (see `sim2sg.dataset.clevr`; the combined
           clevr/CLEVR_scenes.json is assembled by `sim2sg.dataset.coco.assemble`)
  "coco"   the image's labels.json entries (always on: train and eval read labels.json)
  "yolo"   yolo/{images,labels}/NNNNNN.{png,txt} (see `sim2sg.dataset.yolo`; yolo/data.yaml is
           written by `sim2sg.dataset.coco.assemble`)
  "vg"     nothing per image: vg/scene_graphs.json (Visual-Genome style, `sim2sg.dataset.vg`) is
           written by `sim2sg.dataset.coco.assemble` from labels.json

`write_sample` returns the image's COCO entries with image-local annotation indices; the caller
stores them as a label fragment and `labels.assemble` numbers them globally.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import networkx as nx
import numpy as np
import pycocotools.mask as mask_utils

from sim2sg import atomic
from sim2sg.dataset import clevr, kitti, yolo
from sim2sg.render.sample import Sample
from sim2sg.scene import graph as sg

WRITERS = ("sg", "coco", "kitti", "clevr", "yolo", "vg")
DEPTH_SCALE = 1000.0  # depth PNG units per meter (millimetres)
DEPTH_MAX = 65535
# PNG compression level: 1 is several times faster than OpenCV's default 3 for ~10% larger files,
# and the encoder is the slowest step of writing a sample.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def parse_writers(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """"sg,kitti" -> ("coco", "kitti", "sg") (sorted, "coco" always included). ValueError on an
    unknown name."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = {n.strip() for n in names if n.strip()}
    unknown = sorted(names - set(WRITERS))
    if unknown:
        raise ValueError(f"unknown writer {unknown[0]!r} (known: {', '.join(WRITERS)})")
    return tuple(sorted(names | {"coco"}))


# ---- encodings -------------------------------------------------------------------------------
def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8/uint16 or (H, W, 3) uint8 RGB array."""
    a = np.ascontiguousarray(array)
    if a.ndim == 3:
        a = np.ascontiguousarray(a[:, :, ::-1])  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", a, PNG_PARAMS)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for an array of shape {a.shape} and dtype {a.dtype}")
    return buf.tobytes()


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """(H, W) float meters (+inf/NaN/<= 0 = no surface) -> (H, W) uint16 millimetres.

    0 = no surface; a surface closer than 1 mm is stored as 1 so it stays distinguishable from no
    surface; 65535 = 65.535 m or farther.
    """
    d = np.asarray(depth, dtype=np.float64)
    surface = np.isfinite(d) & (d > 0)
    mm = np.zeros(d.shape, dtype=np.float64)
    mm[surface] = np.rint(d[surface] * DEPTH_SCALE)
    mm = np.clip(mm, 0, DEPTH_MAX)
    mm[surface & (mm < 1)] = 1
    return mm.astype(np.uint16)


def png16_to_depth(png: np.ndarray) -> np.ndarray:
    """Inverse of `depth_to_png16`: (H, W) uint16 -> float32 meters, +inf where 0 (no surface)."""
    d = png.astype(np.float32) / DEPTH_SCALE
    d[png == 0] = np.inf
    return d


def rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE {"size": [H, W], "counts": str} of an (H, W) boolean mask."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


# ---- scene graph -----------------------------------------------------------------------------
def visible_graph(sample: Sample) -> nx.MultiDiGraph:
    """The sample's scene graph restricted to its visible objects, each with its exact `box`, the
    relations among them (`sample.relations`), and the camera at the image's resolution.

    Stages without a sim2sg graph get a graph built from the labels (env "unknown")."""
    src = sample.graph
    env = src.graph.get("env", "unknown") if src is not None else "unknown"
    context = src.graph.get("context", {}) if src is not None else {}
    g = sg.new_graph(env, sample.camera, context)
    for o in sample.objects:
        node = dict(src.nodes[o.object_id]) if src is not None and o.object_id in src else {}
        sg.add_object(
            g, o.object_id, node.get("category", o.category), node.get("position", o.position),
            node.get("yaw", o.yaw), node.get("size", o.size), color=node.get("color"),
            material=node.get("material"), texture=node.get("texture"),
            attributes=node.get("attributes"), box=o.box, score=node.get("score"),
        )
    for s, p, o in sample.relations:
        if s in g and o in g:
            sg.add_relation(g, s, p, o)
    return g


# ---- one sample ------------------------------------------------------------------------------
def paths_for(name: str, writers: tuple[str, ...]) -> dict[str, str]:
    """Relative output paths of image `name` for `writers` ({role: path})."""
    p = {
        "image": f"images/{name}.png",
        "depth": f"depth/{name}.png",
        "instance": f"instances/{name}.png",
        "semantic": f"semantics/{name}.png",
    }
    if "sg" in writers:
        p["graph"] = f"scene_graphs/{name}.json"
    if "kitti" in writers:
        p["kitti_image"] = f"kitti/image_2/{name}.png"
        p["kitti_label"] = f"kitti/label_2/{name}.txt"
        p["kitti_calib"] = f"kitti/calib/{name}.txt"
    if "clevr" in writers:
        p["clevr_scene"] = f"clevr/scenes/{name}.json"
    if "yolo" in writers:
        p["yolo_image"] = f"yolo/images/{name}.png"
        p["yolo_label"] = f"yolo/labels/{name}.txt"
    return p


def check_sample(sample: Sample) -> None:
    """Raise ValueError when `sample`'s arrays disagree with each other or exceed the encodings."""
    h, w = sample.instance.shape
    if sample.image.shape != (h, w, 3) or sample.image.dtype != np.uint8:
        raise ValueError(f"{sample.name}: image must be ({h}, {w}, 3) uint8, got {sample.image.shape} {sample.image.dtype}")
    for label, a in (("depth", sample.depth), ("semantic", sample.semantic)):
        if a.shape != (h, w):
            raise ValueError(f"{sample.name}: {label} shape {a.shape} != instance shape {(h, w)}")
    if (sample.camera.width, sample.camera.height) != (w, h):
        raise ValueError(f"{sample.name}: camera is {sample.camera.width}x{sample.camera.height}, image {w}x{h}")
    if sample.instance.size and (sample.instance.min() < 0 or sample.instance.max() > 65535):
        raise ValueError(f"{sample.name}: instance ids must be in [0, 65535] for the 16-bit PNG")
    if len(sample.categories) > 255:
        raise ValueError(f"{sample.name}: {len(sample.categories)} categories do not fit the 8-bit semantic PNG")


def write_sample(out_dir: str | Path, sample: Sample, image_id: int, writers: tuple[str, ...],
                 split: str = "train") -> dict:
    """Write every file of `sample` (named `sample.name`) under `out_dir` and return its labels.

    Returns {"image": COCO image entry, "annotations": [...] (field "index" = position in this
    image; "id" is assigned by `labels.assemble`), "relationships": [{"subject", "object",
    "predicate_id"}] with image-local annotation indices, "files": [relative paths written],
    "env", "categories", "predicates"}.
    """
    check_sample(sample)
    out = Path(out_dir)
    name = sample.name
    paths = paths_for(name, writers)
    h, w = sample.instance.shape

    image_png = encode_png(sample.image)
    atomic.write_bytes(out / paths["image"], image_png)
    atomic.write_bytes(out / paths["depth"], encode_png(depth_to_png16(sample.depth)))
    atomic.write_bytes(out / paths["instance"], encode_png(sample.instance.astype(np.uint16)))
    atomic.write_bytes(out / paths["semantic"], encode_png(sample.semantic.astype(np.uint8)))
    if "sg" in writers:
        sg.write_graph(out / paths["graph"], visible_graph(sample))
    if "kitti" in writers:
        atomic.write_bytes(out / paths["kitti_image"], image_png)
        atomic.write_text(out / paths["kitti_label"], kitti.label_lines(sample))
        atomic.write_text(out / paths["kitti_calib"], kitti.calib_text(sample.camera))
    if "clevr" in writers:
        scene = clevr.scene(sample, image_id, f"{name}.png", split)
        atomic.write_text(out / paths["clevr_scene"], json.dumps(scene, indent=1, allow_nan=False) + "\n")
    if "yolo" in writers:
        atomic.write_bytes(out / paths["yolo_image"], image_png)
        atomic.write_text(out / paths["yolo_label"], yolo.label_lines(sample))

    image = {"id": int(image_id), "file_name": paths["image"], "width": int(w), "height": int(h),
             "depth_file": paths["depth"], "instance_file": paths["instance"],
             "semantic_file": paths["semantic"]}
    if "graph" in paths:
        image["graph_file"] = paths["graph"]

    annotations = []
    index_of = {}
    for o in sample.objects:
        mask = sample.instance == o.instance_id
        x1, y1, x2, y2 = (float(v) for v in o.box)
        index_of[o.object_id] = len(annotations)
        annotations.append({
            "index": len(annotations), "image_id": int(image_id), "category_id": int(o.category_id),
            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(o.visible_pixels), "iscrowd": 0,
            "segmentation": rle(mask), "instance_id": int(o.instance_id),
            "object_id": int(o.object_id), "visible_pixels": int(o.visible_pixels),
            "occlusion": float(o.occlusion), "truncation": float(o.truncation),
        })
    pred_id = {p: i + 1 for i, p in enumerate(sample.predicates)}
    rels = []
    for s, p, o in sample.relations:
        if s not in index_of or o not in index_of:
            continue  # an endpoint fell below the visibility threshold: drop the relation
        if p not in pred_id:
            raise ValueError(f"{name}: relation predicate {p!r} is not in the sample's predicates")
        rels.append({"subject": index_of[s], "object": index_of[o], "predicate_id": pred_id[p]})
    env = sample.graph.graph.get("env") if sample.graph is not None else None
    files = sorted(paths.values())
    if "yolo" in writers and not sample.objects:
        files.remove(paths["yolo_label"])  # an empty label file is valid YOLO, but resume checks sizes > 0
    return {"image": image, "annotations": annotations, "relationships": rels,
            "files": files, "env": env,
            "categories": list(sample.categories), "predicates": list(sample.predicates)}
