"""Ground truth for evaluation: a sim2sg dataset (``labels.json``) or KITTI ``label_2/``.

Both become one `GroundTruth` of plain arrays so the metric functions never see file formats.
Boxes are ``[x1, y1, x2, y2]`` pixels, continuous coordinates, no +1 (docs/formats.md).

KITTI difficulty (FACTS.md, KITTI object devkit): a GT object belongs to a difficulty when its box
height ``y2 - y1 >= min_height``, ``occluded <= max_occluded`` and ``truncated <= max_truncation``
(easy 40 / 0 / 0.15, moderate 25 / 1 / 0.30, hard 25 / 2 / 0.50; each level contains the easier
ones). `apply_kitti_difficulty` marks the others *ignored* rather than deleting them: a detection
on an ignored object is neither a true nor a false positive, as in KITTI's own evaluation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim2sg.errors import InputError

KITTI_CATEGORIES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")
KITTI_DIFFICULTIES = {
    # name: (min box height px, max occluded level, max truncation fraction)
    "easy": (40.0, 0, 0.15),
    "moderate": (25.0, 1, 0.30),
    "hard": (25.0, 2, 0.50),
}


@dataclass(frozen=True)
class ImageGT:
    """Ground truth of one image.

    - ``boxes`` (N, 4) float64 ``[x1, y1, x2, y2]`` pixels, no +1.
    - ``labels`` (N,) int64 category ids (keys of `GroundTruth.categories`).
    - ``ignore`` (N,) bool: the object neither counts as a miss nor makes a detection on it a
      false positive (COCO ``iscrowd``, or outside the chosen KITTI difficulty).
    - ``relations`` (R, 3) int64 rows ``(subject index, object index, predicate id)``; the indices
      point into ``boxes``; duplicates are kept (each is a GT triplet to recall).
    - ``truncation`` (N,) float64 and ``occlusion`` (N,) int64: KITTI's ``truncated`` fraction and
      ``occluded`` level (0 visible .. 3 unknown); None for sim2sg datasets.
    """

    image_id: int
    file_name: str
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    relations: np.ndarray
    truncation: np.ndarray | None = None
    occlusion: np.ndarray | None = None


@dataclass(frozen=True)
class GroundTruth:
    """A whole evaluation set.

    ``categories`` / ``predicates`` map id -> name (category ids from 1, predicate ids from 1;
    0 is background in both). ``kind`` is ``"sim2sg"`` or ``"kitti"``; ``source`` names the file or
    folder for error messages.
    """

    kind: str
    source: str
    categories: dict[int, str]
    predicates: dict[int, str]
    images: tuple[ImageGT, ...]


# ---- sim2sg datasets ----------------------------------------------------------------------------
def read_labels(path: str | Path) -> dict:
    """Read and validate a ``labels.json`` into a dict (`sim2sg.dataset.load_labels`: one
    `InputError` naming the file and field for any problem)."""
    from sim2sg.dataset import (
        load_labels,  # imported here: it pulls in cv2, which scoring dicts does not need
    )

    return load_labels(path)


def _int(value, source, field) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(source, field, f"expected an integer, got {value!r}")
    return value


def _list(value, source, field) -> list:
    if not isinstance(value, list):
        raise InputError(source, field, f"expected a list, got {type(value).__name__}")
    return value


def ground_truth_from_labels(labels: dict, source: str | Path = "labels.json") -> GroundTruth:
    """Convert a labels.json dict (docs/formats.md) into a `GroundTruth`.

    COCO ``bbox`` ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``; ``iscrowd`` becomes ``ignore``;
    relationships' annotation ids become indices into the image's boxes.
    """
    source = str(source)
    categories: dict[int, str] = {}
    for i, c in enumerate(_list(labels.get("categories"), source, "categories")):
        cid = _int(c.get("id") if isinstance(c, dict) else None, source, f"categories[{i}].id")
        name = c.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(source, f"categories[{i}].name", "expected a non-empty string")
        if cid < 1 or cid in categories:
            raise InputError(source, f"categories[{i}].id", f"{cid} is < 1 or a duplicate")
        categories[cid] = name
    predicates: dict[int, str] = {}
    for i, p in enumerate(_list(labels.get("predicate_categories", []), source, "predicate_categories")):
        pid = _int(p.get("id") if isinstance(p, dict) else None, source, f"predicate_categories[{i}].id")
        name = p.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(source, f"predicate_categories[{i}].name", "expected a non-empty string")
        if pid < 1 or pid in predicates:
            raise InputError(source, f"predicate_categories[{i}].id", f"{pid} is < 1 or a duplicate")
        predicates[pid] = name

    images = []
    index_of_image: dict[int, int] = {}
    for i, im in enumerate(_list(labels.get("images"), source, "images")):
        if not isinstance(im, dict):
            raise InputError(source, f"images[{i}]", "expected an object")
        iid = _int(im.get("id"), source, f"images[{i}].id")
        if iid in index_of_image:
            raise InputError(source, f"images[{i}].id", f"duplicate image id {iid}")
        index_of_image[iid] = i
        images.append((iid, str(im.get("file_name", "")), [], [], []))

    where_ann: dict[int, tuple[int, int]] = {}  # annotation id -> (image index, box index)
    for i, a in enumerate(_list(labels.get("annotations"), source, "annotations")):
        f = f"annotations[{i}]"
        if not isinstance(a, dict):
            raise InputError(source, f, "expected an object")
        img = index_of_image.get(_int(a.get("image_id"), source, f + ".image_id"))
        if img is None:
            raise InputError(source, f + ".image_id", f"unknown image id {a.get('image_id')}")
        cid = _int(a.get("category_id"), source, f + ".category_id")
        if cid not in categories:
            raise InputError(source, f + ".category_id", f"unknown category id {cid}")
        bbox = a.get("bbox")
        finite = isinstance(bbox, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
        if not finite or len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
            raise InputError(source, f + ".bbox", f"expected [x, y, w, h] finite, w, h >= 0; got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        boxes, labs, ign = images[img][2], images[img][3], images[img][4]
        aid = _int(a.get("id"), source, f + ".id")
        if aid in where_ann:
            raise InputError(source, f + ".id", f"duplicate annotation id {aid}")
        where_ann[aid] = (img, len(boxes))
        boxes.append([x, y, x + w, y + h])
        labs.append(cid)
        ign.append(bool(a.get("iscrowd", 0)))

    rels: list[list[list[int]]] = [[] for _ in images]
    for i, r in enumerate(_list(labels.get("relationships", []), source, "relationships")):
        f = f"relationships[{i}]"
        if not isinstance(r, dict):
            raise InputError(source, f, "expected an object")
        pid = _int(r.get("predicate_id"), source, f + ".predicate_id")
        if pid not in predicates:
            raise InputError(source, f + ".predicate_id", f"unknown predicate id {pid}")
        ends = []
        for key in ("subject_id", "object_id"):
            aid = _int(r.get(key), source, f"{f}.{key}")
            if aid not in where_ann:
                raise InputError(source, f"{f}.{key}", f"unknown annotation id {aid}")
            ends.append(where_ann[aid])
        (si, s), (oi, o) = ends
        img = index_of_image.get(_int(r.get("image_id", images[si][0]), source, f + ".image_id"))
        if si != oi or img != si:
            raise InputError(source, f, "subject, object and image_id do not belong to one image")
        rels[si].append([s, o, pid])

    out = tuple(
        ImageGT(
            image_id=iid,
            file_name=name,
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.asarray(labs, dtype=np.int64),
            ignore=np.asarray(ign, dtype=bool),
            relations=np.asarray(rels[k], dtype=np.int64).reshape(-1, 3),
        )
        for k, (iid, name, boxes, labs, ign) in enumerate(images)
    )
    return GroundTruth("sim2sg", source, categories, predicates, out)


# ---- KITTI --------------------------------------------------------------------------------------
def _kitti_label_dir(data_dir: Path) -> Path | None:
    for d in (data_dir / "label_2", data_dir / "training" / "label_2"):
        if d.is_dir():
            return d
    return data_dir if data_dir.name == "label_2" and data_dir.is_dir() else None


def read_kitti_labels(label_dir: str | Path) -> GroundTruth:
    """Read KITTI object ground truth: one ``NNNNNN.txt`` per image, 15 fields a line
    (``type truncated occluded alpha left top right bottom h w l x y z rotation_y``; a 16th score
    field is tolerated and dropped).

    ``DontCare`` lines are skipped (their regions are not used: a detection there counts as a
    false positive, unlike KITTI's devkit). Images get ``image_id = int(stem)`` (KITTI stems are
    numbers; otherwise the sorted position) and ``file_name = "image_2/<stem>.png"``. Categories
    are `KITTI_CATEGORIES` with ids 1..8; there are no relations.
    """
    label_dir = Path(label_dir)
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise InputError(label_dir, "", "no KITTI label files (*.txt) found")
    cat_id = {name: i + 1 for i, name in enumerate(KITTI_CATEGORIES)}
    images = []
    for k, path in enumerate(files):
        boxes, labs, trunc, occ = [], [], [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"line {n}"
            if len(fields) not in (15, 16):
                raise InputError(path, where, f"expected 15 fields, got {len(fields)}")
            kind = fields[0]
            if kind == "DontCare":
                continue
            if kind not in cat_id:
                raise InputError(path, where + ".type", f"unknown KITTI type {kind!r}")
            try:
                t, o = float(fields[1]), int(float(fields[2]))
                box = [float(v) for v in fields[4:8]]
            except ValueError:
                raise InputError(path, where, "truncated, occluded and the box must be numbers") from None
            if not all(math.isfinite(v) for v in box + [t]) or box[2] < box[0] or box[3] < box[1]:
                raise InputError(path, where + ".bbox",
                                 f"bad box {box} (need finite, right >= left, bottom >= top)")
            boxes.append(box)
            labs.append(cat_id[kind])
            trunc.append(t)
            occ.append(o)
        stem = path.stem
        images.append(ImageGT(
            image_id=int(stem) if stem.isdigit() else k,
            file_name=f"image_2/{stem}.png",
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.asarray(labs, dtype=np.int64),
            ignore=np.zeros(len(boxes), dtype=bool),
            relations=np.zeros((0, 3), dtype=np.int64),
            truncation=np.asarray(trunc, dtype=np.float64),
            occlusion=np.asarray(occ, dtype=np.int64),
        ))
    ids = [im.image_id for im in images]
    if len(set(ids)) != len(ids):
        raise InputError(label_dir, "", "two label files map to the same image id")
    categories = {i + 1: name for i, name in enumerate(KITTI_CATEGORIES)}
    return GroundTruth("kitti", str(label_dir), categories, {}, tuple(images))


def kitti_difficulty_mask(image: ImageGT, difficulty: str) -> np.ndarray:
    """(N,) bool: which objects of a KITTI image belong to `difficulty` (see module docstring)."""
    min_h, max_occ, max_trunc = KITTI_DIFFICULTIES[difficulty]
    height = image.boxes[:, 3] - image.boxes[:, 1]
    return (height >= min_h) & (image.occlusion <= max_occ) & (image.truncation <= max_trunc)


def apply_kitti_difficulty(gt: GroundTruth, difficulty: str) -> GroundTruth:
    """A copy of KITTI `gt` whose objects outside `difficulty` are marked ignored."""
    if gt.kind != "kitti":
        raise InputError(gt.source, "", "KITTI difficulty filters need KITTI ground truth (label_2/)")
    if difficulty not in KITTI_DIFFICULTIES:
        raise InputError(gt.source, "",
                         f"unknown KITTI difficulty {difficulty!r}; use one of {list(KITTI_DIFFICULTIES)}")
    images = tuple(
        dataclasses.replace(im, ignore=im.ignore | ~kitti_difficulty_mask(im, difficulty))
        for im in gt.images
    )
    return dataclasses.replace(gt, images=images)


def load_ground_truth(data_dir: str | Path) -> GroundTruth:
    """Ground truth of `data_dir`: a sim2sg dataset (``labels.json``, or the file itself) or a
    KITTI folder (``label_2/``, ``training/label_2/``, or ``label_2`` itself)."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return ground_truth_from_labels(read_labels(data_dir), data_dir)
    if (data_dir / "labels.json").is_file():
        path = data_dir / "labels.json"
        return ground_truth_from_labels(read_labels(path), path)
    label_dir = _kitti_label_dir(data_dir)
    if label_dir is not None:
        return read_kitti_labels(label_dir)
    if not data_dir.exists():
        raise InputError(data_dir, "", "not found")
    raise InputError(data_dir, "", "neither a sim2sg dataset (labels.json) nor a KITTI folder (label_2/)")
