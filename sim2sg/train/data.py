"""Training data: a labelled sim2sg dataset (labels.json + images) and unlabelled image folders.

Images come out as (3, H, W) float32 tensors in [0, 1], RGB. Targets are dicts:
``boxes`` (N, 4) float32 [x1, y1, x2, y2] pixels (formats.md convention, no +1),
``labels`` (N,) int64 contiguous category indices 1..C (0 = background),
``relations`` (R, 3) int64 rows (subject index, object index, predicate index 1..P) where the
indices point into ``boxes``, and ``image_id`` (int, the labels.json image id).
Batches are collated as tuples of lists (detection models take lists of differently sized items).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from sim2sg.checks import imread
from sim2sg.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# How much decoded image data (uint8) training holds in memory rather than decoding it each time
# it is read: 2 GiB is ~10,000 images at 256x256.
PRELOAD_BYTES = 2 << 30


@dataclass(frozen=True)
class LabelsInfo:
    """What the model needs to know about a labelled dataset.

    categories / predicates: names in id order (index k is contiguous id k + 1);
    category_ids / predicate_ids: the labels.json ids in the same order; image_size: (H, W) of most
    images; env: the environment name from labels.json `info.env` ("unknown" when absent).
    """

    categories: tuple[str, ...]
    predicates: tuple[str, ...]
    category_ids: tuple[int, ...]
    predicate_ids: tuple[int, ...]
    image_size: tuple[int, int]
    env: str


def labels_file(data_dir: str | Path) -> Path:
    """The labels file of dataset `data_dir`: its labels.json, or `data_dir` itself when that is
    a file (a labels file given directly, e.g. a COCO instances.json)."""
    data_dir = Path(data_dir)
    return data_dir if data_dir.is_file() else data_dir / "labels.json"


def read_labels(data_dir: str | Path) -> dict:
    """Parsed `data_dir/labels.json`, validated; raises `InputError` naming file and field.

    The dataset package's `load_labels` (when present) does the full validation; the checks here
    cover only what training reads, so this works before that package exists.
    """
    data_dir = Path(data_dir)
    path = labels_file(data_dir)
    if not path.is_file() and not data_dir.is_dir():
        raise InputError(data_dir, "", "dataset folder not found")
    if not path.is_file():
        raise InputError(path, "", "file not found (a sim2sg dataset folder holds labels.json)")
    try:
        from sim2sg.dataset.coco import load_labels  # the full validator, when present
    except ImportError:
        load_labels = None
    if load_labels is not None:
        from sim2sg.dataset.coco import check_image_files

        data = load_labels(path)
        check_image_files(data_dir, data, path)
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(path, "", f"cannot read: {e}") from None
        except json.JSONDecodeError as e:
            raise InputError(path, "", f"not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise InputError(path, "", "expected a JSON object")
    for key in ("images", "categories", "annotations"):
        if not isinstance(data.get(key), list):
            raise InputError(path, key, "missing or not a list")
    if not data["images"]:
        raise InputError(path, "images", "no images")
    if not data["categories"]:
        raise InputError(path, "categories", "no categories")
    for k, im in enumerate(data["images"]):
        for f in ("id", "file_name", "width", "height"):
            if f not in im:
                raise InputError(path, f"images[{k}].{f}", "missing required field")
    for k, a in enumerate(data["annotations"]):
        for f in ("id", "image_id", "category_id", "bbox"):
            if f not in a:
                raise InputError(path, f"annotations[{k}].{f}", "missing required field")
        if not (isinstance(a["bbox"], list) and len(a["bbox"]) == 4):
            raise InputError(path, f"annotations[{k}].bbox", "expected [x, y, w, h]")
    return data


def labels_info(data: dict) -> LabelsInfo:
    cats = sorted(data["categories"], key=lambda c: c["id"])
    preds = sorted(data.get("predicate_categories") or [], key=lambda c: c["id"])
    sizes = Counter((int(im["height"]), int(im["width"])) for im in data["images"])
    return LabelsInfo(
        categories=tuple(c["name"] for c in cats),
        predicates=tuple(p["name"] for p in preds),
        category_ids=tuple(int(c["id"]) for c in cats),
        predicate_ids=tuple(int(p["id"]) for p in preds),
        image_size=sizes.most_common(1)[0][0],
        env=str((data.get("info") or {}).get("env", "unknown")),
    )


def check_vocabulary(data_dir: str | Path, categories, predicates, option: str, exact: bool = False) -> LabelsInfo:
    """Refuse, before any training, a labelled dataset of another vocabulary than the model's
    `categories` / `predicates` (names in id order); returns its `LabelsInfo`. To be scored
    (exact=False) the dataset must hold every category the model predicts (as the evaluator
    matches names: `sim2sg.eval.metrics.category_lookup`) and, when it labels relations, the
    model's predicates; to be trained on (exact=True) the same names in the same order.
    `InputError` on its labels file."""
    data = read_labels(data_dir)
    info = labels_info(data)
    path = labels_file(data_dir)
    cats, preds = list(categories), list(predicates)
    had = f"; it has {list(info.categories)} and {list(info.predicates)} (env {info.env!r})"
    if exact:
        for field, ours, theirs in (("categories", cats, info.categories),
                                    ("predicate_categories", preds, info.predicates)):
            if list(theirs) != ours:
                raise InputError(path, field, f"{option} must be labelled with the model's {ours} in this order{had}")
        return info
    from sim2sg.eval.metrics import category_lookup  # the evaluator's own rule (pycocotools: imported late)

    lookup = category_lookup(dict(enumerate(info.categories, 1)))
    missing = [c for c in cats if lookup(c) is None]
    if missing:
        raise InputError(path, "categories", f"lacks the model's categories {missing}, so {option} cannot score "
                                             f"its predictions{had}")
    if info.predicates and set(info.predicates) != set(preds):
        raise InputError(path, "predicate_categories", f"not the model's predicates {preds}, so {option} cannot "
                                                       f"score its relations{had}")
    return info


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(3, H, W) float32 RGB in [0, 1]; resized to `size` = (H, W) with area interpolation when
    given and different. Raises `InputError` for a missing or unreadable file."""
    path = Path(path)
    img = imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, "", "missing or not a readable image")
    if size is not None and img.shape[:2] != tuple(size):
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def decode_all(paths: list[Path], size: tuple[int, int] | None = None) -> list[torch.Tensor]:
    """Every image of `paths` decoded as `read_image` does, held as (3, H, W) uint8 (exactly
    `read_image`'s values times 255: they are multiples of 1/255). Decoded on up to 8 threads
    (cv2 decodes outside the GIL)."""

    def load(f):
        return read_image(f, size).mul_(255.0).round_().to(torch.uint8)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
        return list(ex.map(load, paths))


class LabelledDataset(Dataset):
    """A sim2sg dataset folder: item i = (image (3, H, W), target dict), images in id order.

    Boxes thinner than `min_box` pixels are dropped (with their relations): the detector's box
    regression cannot learn from degenerate boxes. preload_bytes: when every image's labels give
    its width and height and all of them fit in this many bytes decoded, they are decoded once
    here and held as uint8 (training reads each image many times; decoding a PNG per item was
    two thirds of an H100 training step of the fast network).
    """

    def __init__(self, data_dir: str | Path, min_box: float = 1.0, preload_bytes: int = 0):
        self.labels_path = src = labels_file(data_dir)
        self.root = src.parent  # image paths are relative to the labels file's folder (a COCO file given directly)
        data = read_labels(data_dir)
        self.info = labels_info(data)
        cat_index = {cid: k + 1 for k, cid in enumerate(self.info.category_ids)}
        pred_index = {pid: k + 1 for k, pid in enumerate(self.info.predicate_ids)}
        self.images = sorted(data["images"], key=lambda im: im["id"])
        anns: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for k, a in enumerate(data["annotations"]):
            if a["image_id"] not in anns:
                raise InputError(src, f"annotations[{k}].image_id", f"no image with id {a['image_id']}")
            if a["category_id"] not in cat_index:
                raise InputError(src, f"annotations[{k}].category_id", f"unknown category id {a['category_id']}")
            x, y, w, h = (float(v) for v in a["bbox"])
            if w >= min_box and h >= min_box:
                anns[a["image_id"]].append(a)
        rels: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for k, r in enumerate(data.get("relationships") or []):
            if r.get("predicate_id") not in pred_index:
                raise InputError(src, f"relationships[{k}].predicate_id", f"unknown predicate id {r.get('predicate_id')}")
            if r.get("image_id") in rels:
                rels[r["image_id"]].append(r)
        self.targets = []
        for im in self.images:
            a_list = sorted(anns[im["id"]], key=lambda a: a["id"])
            index = {a["id"]: i for i, a in enumerate(a_list)}
            boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in a_list]
            trip = sorted({(index[r["subject_id"]], index[r["object_id"]], pred_index[r["predicate_id"]])
                           for r in rels[im["id"]] if r.get("subject_id") in index and r.get("object_id") in index})
            self.targets.append({
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([cat_index[a["category_id"]] for a in a_list], dtype=torch.int64),
                "relations": torch.tensor(trip, dtype=torch.int64).reshape(-1, 3),
                "image_id": int(im["id"]),
            })
        self._cache = None
        sizes = [(im.get("width"), im.get("height")) for im in self.images]
        if preload_bytes > 0 and all(isinstance(w, int) and isinstance(h, int) for w, h in sizes) \
                and 0 < sum(3 * w * h for w, h in sizes) <= preload_bytes:
            self._cache = decode_all([self.root / im["file_name"] for im in self.images])

    @property
    def preloaded(self) -> bool:
        return self._cache is not None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        im = self.images[i]
        img = (self._cache[i].float().div_(255.0) if self._cache is not None
               else read_image(self.root / im["file_name"]))
        t = self.targets[i]
        return img, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in t.items()}


def list_images(folder: str | Path) -> list[Path]:
    """Sorted png/jpg files directly in `folder` (KITTI's `image_2/` works as is); raises
    `InputError` when the folder is missing or holds no images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "", "image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(folder, "", f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


class ImageFolder(Dataset):
    """Unlabelled images of a folder (the target domain): item i = (image (3, H, W), file path).
    All images are resized to `size` = (H, W) when given (the source size, so both domains go
    through the backbone in one batch at one scale)."""

    def __init__(self, folder: str | Path, size: tuple[int, int] | None = None, preload_bytes: int = 0):
        self.files = list_images(folder)
        self.size = size
        self._cache = None
        # The loop reads every target image many times (predictions, BatchNorm statistics, texture
        # crops, alignment batches): with a `size` and when they fit in `preload_bytes` decoded,
        # the images are decoded once and held as uint8 (the same values as decoding each time).
        if size is not None and 0 < len(self.files) * 3 * size[0] * size[1] <= preload_bytes:
            self._cache = decode_all(self.files, size)

    @property
    def preloaded(self) -> bool:
        return self._cache is not None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        if self._cache is not None:
            return self._cache[i].float().div_(255.0), str(self.files[i])
        return read_image(self.files[i], self.size), str(self.files[i])


class SampleDataset(torch.utils.data.Dataset):
    """Rendered samples (`sim2sg.render.sample.Sample`, held in memory) as detector training items: (image (3, H, W) float in [0, 1], target with
    boxes (N, 4) xyxy px, labels (N,) 1-based, relations (M, 3) (subject idx, object idx, predicate
    id 1-based), image_id)."""

    def __init__(self, samples: list, predicates: list[str], min_box: float = 1.0):
        self.images, self.targets = [], []
        pred_id = {p: k + 1 for k, p in enumerate(predicates)}
        for i, s in enumerate(samples):
            objs = [o for o in s.objects if o.box[2] - o.box[0] >= min_box and o.box[3] - o.box[1] >= min_box]
            index = {o.object_id: k for k, o in enumerate(objs)}
            trip = sorted({(index[a], index[b], pred_id[p]) for a, p, b in s.relations
                           if a in index and b in index and p in pred_id})
            self.images.append(torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1))
            self.targets.append({
                "boxes": torch.tensor([o.box for o in objs], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([o.category_id for o in objs], dtype=torch.int64),
                "relations": torch.tensor(trip, dtype=torch.int64).reshape(-1, 3),
                "image_id": i,
            })

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255.0, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self.targets[i].items()}


class LabelledOnly(torch.utils.data.Dataset):
    """`dataset`'s items with "domain_source": False in each target: they train the labelled
    losses only, never the domain classifiers (`SceneGraphRCNN.forward`)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        image, target = self.dataset[i]
        return image, {**target, "domain_source": False}


class ListDataset(torch.utils.data.Dataset):
    """(image, target) pairs held in memory (pseudo labels)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        im, t = self.items[i]
        return im, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in t.items()}


def collate(batch):
    """[(image, target), ...] -> ([images], [targets]) (lists, not stacked)."""
    return tuple(list(x) for x in zip(*batch))
