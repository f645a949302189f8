"""`labels.json`: assembling it from per-image fragments, loading and validating it, and checking a
dataset's boxes against its masks on disk. The format is specified in docs/formats.md.

Per-image label fragments (`labels/NNNNNN.json`, written last for each image by the render job)
make a render resumable: an image is done when its fragment exists and every file it lists exists;
`assemble` numbers annotations and relationships globally and writes labels.json atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from sim2sg import atomic
from sim2sg.checks import Checker, imread, read_json
from sim2sg.dataset import vg, yolo
from sim2sg.dataset.foreign import to_sim2sg_labels
from sim2sg.errors import InputError

FORMAT = "sim2sg-labels"
VERSION = 1
FRAGMENT_FORMAT = "sim2sg-label-fragment"
LABELS_FILE = "labels.json"
CLEVR_SCENES_FILE = "clevr/CLEVR_scenes.json"


# ---- fragments -------------------------------------------------------------------------------
def fragment_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / "labels" / f"{name}.json"


def write_fragment(out_dir: str | Path, name: str, fragment: dict) -> None:
    """Write image `name`'s fragment (the dict of `writers.write_sample` plus "stage" and "config")."""
    data = {"format": FRAGMENT_FORMAT, "version": VERSION, "name": name, **fragment}
    atomic.write_text(fragment_path(out_dir, name), json.dumps(data, indent=1, allow_nan=False) + "\n")


def read_fragment(out_dir: str | Path, name: str) -> dict | None:
    """Image `name`'s fragment, or None when it is missing or unreadable (then the image is redone)."""
    try:
        data = json.loads(fragment_path(out_dir, name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != FRAGMENT_FORMAT or data.get("version") != VERSION:
        return None
    return data


def fragment_complete(out_dir: str | Path, fragment: dict | None) -> bool:
    """True when every file the fragment lists exists under `out_dir`, non-empty except text label
    files (a KITTI `label_2/*.txt` of an image with no visible object is empty by design; files
    are written atomically, so an empty one is never half-written)."""
    if fragment is None:
        return False
    out = Path(out_dir)
    try:
        return all((out / f).stat().st_size > 0 or str(f).endswith(".txt") for f in fragment.get("files", []))
    except (OSError, TypeError):
        return False


def assemble(out_dir: str | Path, names: Iterable[str], info: dict | None = None) -> dict:
    """Build labels.json from the fragments of images `names` (those present, in the given order)
    and write it atomically under `out_dir` (only when its bytes change, so re-running a finished
    render writes nothing). Also writes clevr/CLEVR_scenes.json when any image has a CLEVR scene.

    Annotation and relationship ids are consecutive from 0 in image order. Raises `InputError` when
    fragments disagree on the vocabularies. Returns the labels dict.
    """
    out = Path(out_dir)
    images, annotations, relationships, scenes = [], [], [], []
    categories = predicates = None
    envs = []
    first = None
    used_writers: set[str] = set()
    for name in names:
        frag = read_fragment(out, name)
        if frag is None:
            continue
        used_writers.update(frag.get("writers", []))
        src = fragment_path(out, name)
        if categories is None:
            categories, predicates, first = frag["categories"], frag["predicates"], src
        elif frag["categories"] != categories:
            raise InputError(src, "categories", f"differ from those of {first}: {frag['categories']} vs {categories}")
        elif frag["predicates"] != predicates:
            raise InputError(src, "predicates", f"differ from those of {first}: {frag['predicates']} vs {predicates}")
        if frag.get("env") and frag["env"] not in envs:
            envs.append(frag["env"])
        images.append(frag["image"])
        base = len(annotations)
        for a in frag["annotations"]:
            a = dict(a)
            a["id"] = base + a.pop("index")
            annotations.append(_ordered_annotation(a))
        for r in frag["relationships"]:
            relationships.append({"id": len(relationships), "image_id": frag["image"]["id"],
                                  "subject_id": base + r["subject"], "object_id": base + r["object"],
                                  "predicate_id": r["predicate_id"]})
        clevr_file = next((f for f in frag.get("files", []) if f.startswith("clevr/scenes/")), None)
        if clevr_file is not None:
            scenes.append(json.loads((out / clevr_file).read_text(encoding="utf-8")))
    categories = categories or []
    predicates = predicates or []
    labels = {
        "info": {"format": FORMAT, "version": VERSION, "env": envs[0] if len(envs) == 1 else (envs or None),
                 **(info or {})},
        "images": images,
        "categories": [{"id": i + 1, "name": c, "supercategory": "object"} for i, c in enumerate(categories)],
        "annotations": annotations,
        "predicate_categories": [{"id": i + 1, "name": p} for i, p in enumerate(predicates)],
        "relationships": relationships,
    }
    _write_if_changed(out / LABELS_FILE, json.dumps(labels, indent=1, allow_nan=False) + "\n")
    if "yolo" in used_writers:
        _write_if_changed(out / yolo.DATA_YAML, yolo.data_yaml([c["name"] for c in labels["categories"]]))
    if "vg" in used_writers:
        _write_if_changed(out / vg.SCENE_GRAPHS_FILE, json.dumps(vg.scene_graphs(labels), allow_nan=False) + "\n")
    if scenes:
        split = scenes[0].get("split", "train")
        clevr_all = {"info": {"split": split, "version": "1.0", "generator": "sim2sg",
                              "license": "Creative Commons Attribution (CC BY 4.0)"},
                     "scenes": scenes}
        _write_if_changed(out / CLEVR_SCENES_FILE, json.dumps(clevr_all, allow_nan=False) + "\n")
    return labels


_ANNOTATION_ORDER = ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation",
                     "instance_id", "object_id", "visible_pixels", "occlusion", "truncation")


def _ordered_annotation(a: dict) -> dict:
    return {k: a[k] for k in _ANNOTATION_ORDER if k in a} | {k: v for k, v in a.items() if k not in _ANNOTATION_ORDER}


def _write_if_changed(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic.write_bytes(path, data)


# ---- loading and validation ------------------------------------------------------------------
def load_labels(path: str | Path) -> dict:
    """Read and validate a labels.json; returns the parsed dict (unchanged for sim2sg's own files;
    any COCO instances file or Visual-Genome-style scene-graph list is first converted by
    `sim2sg.dataset.foreign.to_sim2sg_labels`).

    Checks every field's type and range, id uniqueness, category/predicate ids 1..n in order,
    references (annotation -> image and category; relationship -> image, predicate and two distinct
    annotations of that same image), boxes with positive size inside the image, segmentation sizes.
    Raises `InputError(path, field, message)` on the first problem, e.g. field
    ``annotations[3].bbox``.
    """
    path = Path(path)
    data = read_json(path, "labels file")
    data = to_sim2sg_labels(data, path)  # COCO of other tools, Visual-Genome-style lists
    validate_labels(data, path)
    return data


def validate_labels(data: Any, source: str | Path = "<labels>") -> None:
    """Validate a parsed labels.json object (see `load_labels`)."""
    v = _Check(source)
    v.type(data, dict, "", "a JSON object")
    for key in ("info", "images", "categories", "annotations", "predicate_categories", "relationships"):
        v.required(data, key, "")
    info = data["info"]
    v.type(info, dict, "info", "a JSON object")
    if info.get("format") != FORMAT:
        v.fail("info.format", f"expected {FORMAT!r}, got {info.get('format')!r}")
    if info.get("version") != VERSION:
        v.fail("info.version", f"unsupported version {info.get('version')!r} (this sim2sg reads {VERSION})")

    cat_ids = v.vocabulary(data["categories"], "categories", extra=("supercategory",))
    pred_ids = v.vocabulary(data["predicate_categories"], "predicate_categories")

    images = v.list(data["images"], "images")
    image_size = {}
    for k, im in enumerate(images):
        f = f"images[{k}]"
        v.type(im, dict, f, "a JSON object")
        iid = v.integer(v.required(im, "id", f), f"{f}.id", minimum=0)
        if iid in image_size:
            v.fail(f"{f}.id", f"duplicate image id {iid}")
        v.relative_path(v.required(im, "file_name", f), f"{f}.file_name")
        w = v.integer(v.required(im, "width", f), f"{f}.width", minimum=1)
        h = v.integer(v.required(im, "height", f), f"{f}.height", minimum=1)
        for key in ("depth_file", "instance_file", "semantic_file", "graph_file"):
            if key in im:
                v.relative_path(im[key], f"{f}.{key}")
        image_size[iid] = (w, h)

    anns = v.list(data["annotations"], "annotations")
    ann_image = {}
    for k, a in enumerate(anns):
        f = f"annotations[{k}]"
        v.type(a, dict, f, "a JSON object")
        aid = v.integer(v.required(a, "id", f), f"{f}.id", minimum=0)
        if aid in ann_image:
            v.fail(f"{f}.id", f"duplicate annotation id {aid}")
        iid = v.integer(v.required(a, "image_id", f), f"{f}.image_id")
        if iid not in image_size:
            v.fail(f"{f}.image_id", f"no image with id {iid}")
        cid = v.integer(v.required(a, "category_id", f), f"{f}.category_id")
        if cid not in cat_ids:
            v.fail(f"{f}.category_id", f"no category with id {cid}")
        w, h = image_size[iid]
        bbox = v.numbers(v.required(a, "bbox", f), 4, f"{f}.bbox")
        x, y, bw, bh = bbox
        if bw <= 0 or bh <= 0:
            v.fail(f"{f}.bbox", f"width and height must be positive, got {bbox}")
        eps = 1e-6
        if x < -eps or y < -eps or x + bw > w + eps or y + bh > h + eps:
            v.fail(f"{f}.bbox", f"{bbox} is not inside the {w}x{h} image")
        area = v.number(v.required(a, "area", f), f"{f}.area")
        if area < 0 or area > bw * bh + eps:
            v.fail(f"{f}.area", f"must be in [0, bbox area {bw * bh}], got {area}")
        if v.required(a, "iscrowd", f) not in (0, 1) or isinstance(a["iscrowd"], bool):
            v.fail(f"{f}.iscrowd", f"must be 0 or 1, got {a['iscrowd']!r}")
        if "segmentation" in a:
            seg = a["segmentation"]
            sf = f"{f}.segmentation"
            v.type(seg, dict, sf, "a COCO RLE object {size, counts}")
            size = v.required(seg, "size", sf)
            if size != [h, w]:
                v.fail(f"{sf}.size", f"expected [{h}, {w}] (the image's [height, width]), got {size!r}")
            counts = v.required(seg, "counts", sf)
            if not isinstance(counts, str) or not counts:
                v.fail(f"{sf}.counts", "expected a non-empty COCO compressed RLE string")
            # decoders (pycocotools) write the runs without bounds checks: they must cover the image
            try:
                runs = rle_runs(counts)
            except ValueError as e:
                v.fail(f"{sf}.counts", f"not a COCO compressed RLE string ({e})")
            if sum(runs) != w * h:
                v.fail(f"{sf}.counts", f"runs cover {sum(runs)} pixels, the {w}x{h} image has {w * h}")
        if "instance_id" in a:
            v.integer(a["instance_id"], f"{f}.instance_id", minimum=1, maximum=65535)
        if "object_id" in a:
            v.integer(a["object_id"], f"{f}.object_id", minimum=0)
        if "visible_pixels" in a:
            vp = v.integer(a["visible_pixels"], f"{f}.visible_pixels", minimum=0)
            if vp != area:
                v.fail(f"{f}.visible_pixels", f"{vp} differs from area {area}")
        for key in ("occlusion", "truncation"):
            if key in a:
                val = v.number(a[key], f"{f}.{key}")
                if not 0.0 <= val <= 1.0:
                    v.fail(f"{f}.{key}", f"must be in [0, 1], got {val}")
        ann_image[aid] = iid

    rels = v.list(data["relationships"], "relationships")
    seen_rel_ids, seen_triplets = set(), set()
    for k, r in enumerate(rels):
        f = f"relationships[{k}]"
        v.type(r, dict, f, "a JSON object")
        rid = v.integer(v.required(r, "id", f), f"{f}.id", minimum=0)
        if rid in seen_rel_ids:
            v.fail(f"{f}.id", f"duplicate relationship id {rid}")
        seen_rel_ids.add(rid)
        iid = v.integer(v.required(r, "image_id", f), f"{f}.image_id")
        if iid not in image_size:
            v.fail(f"{f}.image_id", f"no image with id {iid}")
        ends = []
        for key in ("subject_id", "object_id"):
            aid = v.integer(v.required(r, key, f), f"{f}.{key}")
            if aid not in ann_image:
                v.fail(f"{f}.{key}", f"no annotation with id {aid}")
            if ann_image[aid] != iid:
                v.fail(f"{f}.{key}", f"annotation {aid} belongs to image {ann_image[aid]}, not image {iid}")
            ends.append(aid)
        if ends[0] == ends[1]:
            v.fail(f, f"subject and object are the same annotation {ends[0]}")
        pid = v.integer(v.required(r, "predicate_id", f), f"{f}.predicate_id")
        if pid not in pred_ids:
            v.fail(f"{f}.predicate_id", f"no predicate with id {pid}")
        triplet = (ends[0], pid, ends[1])
        if triplet in seen_triplets:
            v.fail(f, f"duplicate relationship (subject {ends[0]}, predicate {pid}, object {ends[1]})")
        seen_triplets.add(triplet)


def rle_runs(counts: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' `rleFrString`, in Python,
    with its checks): `ValueError` for characters outside the alphabet, a truncated number or a
    negative run."""
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("truncated")
            c = ord(counts[p]) - 48
            if not 0 <= c <= 63:
                raise ValueError(f"character {counts[p]!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError(f"negative run {x} at {len(runs)}")
        runs.append(x)
    return runs


def check_image_files(root: str | Path, labels: dict, source: str | Path) -> None:
    """Every image of a validated labels dict exists under `root` (a stat each; contents are read
    when sampled): a missing file fails before training or evaluation starts, not when drawn."""
    root = Path(root)
    for k, im in enumerate(labels["images"]):
        if not (root / im["file_name"]).is_file():
            raise InputError(source, f"images[{k}].file_name", f"{root / im['file_name']} does not exist")


class _Check(Checker):
    """`Checker` plus the [{id, name}] vocabularies of labels.json."""

    def relative_path(self, x, field: str) -> str:
        """A file path inside the dataset folder: relative, no '..' parts."""
        p = self.string(x, field)
        parts = p.replace("\\", "/").split("/")
        if p.startswith(("/", "\\")) or ".." in parts or (len(p) > 1 and p[1] == ":") or "\0" in p:
            self.fail(field, f"{p!r} must be a path inside the dataset folder (relative, no '..')")
        return p

    def vocabulary(self, x, field: str, extra: tuple[str, ...] = ()) -> set[int]:
        """[{id, name}] with ids 1..n in order and unique names; returns the ids."""
        self.list(x, field)
        names = set()
        for k, c in enumerate(x):
            f = f"{field}[{k}]"
            self.type(c, dict, f, "a JSON object")
            cid = self.integer(self.required(c, "id", f), f"{f}.id")
            if cid != k + 1:
                self.fail(f"{f}.id", f"ids must be 1, 2, ... in order (0 is background); expected {k + 1}, got {cid}")
            name = self.string(self.required(c, "name", f), f"{f}.name")
            if name in names:
                self.fail(f"{f}.name", f"duplicate name {name!r}")
            names.add(name)
            for key in extra:
                if key in c:
                    self.string(c[key], f"{f}.{key}")
        return set(range(1, len(x) + 1))


# ---- dataset check against the masks on disk -------------------------------------------------
def validate_dataset(dataset_dir: str | Path) -> dict:
    """Validate `dataset_dir/labels.json` and check it against the files on disk.

    For every image: the image, instance and semantic PNGs exist with the image's size; for every
    annotation with an `instance_id`, its pixels in the instance PNG give exactly its `area`, its
    `bbox` (tight, exclusive right/bottom edges) and its RLE `segmentation`, and they carry its
    category in the semantic PNG. Raises `InputError` naming the file and field of the first
    mismatch. Returns {"images": n, "annotations": n, "relationships": n}.
    """
    root = Path(dataset_dir)
    labels_path = root / LABELS_FILE
    labels = load_labels(labels_path)
    by_image: dict[int, list[tuple[int, dict]]] = {}
    for k, a in enumerate(labels["annotations"]):
        by_image.setdefault(a["image_id"], []).append((k, a))
    for k, im in enumerate(labels["images"]):
        f = f"images[{k}]"
        w, h = im["width"], im["height"]
        rgb = _read_png(root / im["file_name"], labels_path, f"{f}.file_name")
        if rgb.shape[:2] != (h, w):
            raise InputError(root / im["file_name"], "", f"is {rgb.shape[1]}x{rgb.shape[0]}, labels.json says {w}x{h}")
        anns = by_image.get(im["id"], [])
        if "instance_file" not in im:
            if any("instance_id" in a for _, a in anns):
                raise InputError(labels_path, f"{f}.instance_file", "missing, but annotations have instance_id")
            continue
        inst = _read_png(root / im["instance_file"], labels_path, f"{f}.instance_file")
        sem = _read_png(root / im["semantic_file"], labels_path, f"{f}.semantic_file") if "semantic_file" in im else None
        for name, arr in (("instance_file", inst), ("semantic_file", sem)):
            if arr is not None and arr.shape != (h, w):
                raise InputError(root / im[name], "", f"has shape {arr.shape}, expected ({h}, {w})")
        for ka, a in anns:
            if "instance_id" not in a:
                continue
            af = f"annotations[{ka}]"
            mask = inst == a["instance_id"]
            n = int(mask.sum())
            if n != a["area"]:
                raise InputError(labels_path, f"{af}.area", f"{a['area']} but instance {a['instance_id']} has {n} pixels in {im['instance_file']}")
            if n == 0:
                continue
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            box = [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]
            if any(abs(p - q) > 1e-6 for p, q in zip(box, a["bbox"])):
                raise InputError(labels_path, f"{af}.bbox", f"{a['bbox']} but the mask in {im['instance_file']} gives {box}")
            if "segmentation" in a:
                try:
                    seg = mask_utils.decode({"size": a["segmentation"]["size"],
                                             "counts": a["segmentation"]["counts"].encode("ascii")})
                except Exception as e:  # pycocotools raises bare exceptions on corrupt RLE
                    raise InputError(labels_path, f"{af}.segmentation", f"cannot decode RLE: {e}") from None
                if not np.array_equal(seg.astype(bool), mask):
                    raise InputError(labels_path, f"{af}.segmentation", f"differs from instance {a['instance_id']} in {im['instance_file']}")
            if sem is not None and not np.all(sem[mask] == a["category_id"]):
                raise InputError(labels_path, f"{af}.category_id", f"{a['category_id']} but {im['semantic_file']} has other ids under instance {a['instance_id']}")
    return {"images": len(labels["images"]), "annotations": len(labels["annotations"]),
            "relationships": len(labels["relationships"])}


def _read_png(path: Path, labels_path: Path, field: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(labels_path, field, f"{path} does not exist")
    a = imread(path, cv2.IMREAD_UNCHANGED)
    if a is None:
        raise InputError(path, "", "not a readable image")
    return a
