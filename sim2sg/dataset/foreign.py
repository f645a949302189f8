"""Labels written by other tools -> sim2sg's labels.json dict (docs/formats.md, "Reading other tools' labels").

`to_sim2sg_labels(data, source)` takes a parsed JSON value and returns a dict in sim2sg's
labels.json form, which `sim2sg.dataset.coco.validate_labels` then checks as usual:

- a sim2sg labels.json (``info.format == "sim2sg-labels"``) is returned unchanged;
- any COCO instances file (pycocotools, BlenderProc, Replicator, hand-labelled sets): ``info``
  optional; category ids of any values are renumbered 1..n in id order (names are what predictions
  are scored by, so the renumbering changes no metric); ``iscrowd`` defaults to 0 and ``area`` to
  the box area; a box reaching past the image by less than one pixel is clipped to it (exporters
  round); segmentations other than compressed RLE (polygons, uncompressed RLE) are dropped, as no
  metric reads them; relationships are optional: sim2sg's ``predicate_categories`` +
  ``relationships`` (``subject_id``, ``object_id``, ``predicate_id``), or the Visual-Genome-style
  ``predicate`` name in place of ``predicate_id``; sim2sg's extra fields (``instance_id``,
  ``visible_pixels``, ``occlusion``, ``truncation``, ...) are kept when present;
- a Visual-Genome-style scene-graph list (what `sim2sg render --writers vg` writes,
  ``vg/scene_graphs.json``): ``[{image_id, width, height, file_name?, objects: [{object_id, x, y, w,
  h, names: [..]}], relationships: [{relationship_id?, predicate, subject_id, object_id}]}]``.
  Visual Genome's own scene_graphs.json lacks image sizes (they live in image_data.json): add
  ``width`` and ``height`` to each entry.

Everything that cannot be converted is one `InputError(source, field, message)`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sim2sg.checks import Checker

SIM2SG_FORMAT = "sim2sg-labels"


def to_sim2sg_labels(data: Any, source: str | Path = "<labels>") -> Any:
    """`data` (parsed JSON) in sim2sg's labels.json form; see the module docstring. Values that
    are neither COCO nor VG-style are returned unchanged, for the validator to name the problem."""
    if isinstance(data, list):
        return _from_vg(data, Checker(source))
    if not isinstance(data, dict):
        return data
    info = data.get("info")
    if isinstance(info, dict) and info.get("format") == SIM2SG_FORMAT:
        return data
    if not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        return data  # not COCO either: the validator reports the missing fields
    return _from_coco(data, Checker(source))


def _vocabulary(v: Checker, items: list, field: str) -> tuple[list[dict], dict[int, int]]:
    """[{id, name, ...}] of any ids -> (entries renumbered 1..n in id order, {old id: new id})."""
    rows = []
    for k, c in enumerate(v.list(items, field)):
        f = f"{field}[{k}]"
        v.type(c, dict, f, "a JSON object")
        cid = v.integer(v.required(c, "id", f), f"{f}.id")
        v.string(v.required(c, "name", f), f"{f}.name")
        rows.append((cid, k, c))
    rows.sort(key=lambda r: r[0])
    remap, out = {}, []
    for new, (cid, k, c) in enumerate(rows, start=1):
        if cid in remap:
            v.fail(f"{field}[{k}].id", f"duplicate id {cid}")
        remap[cid] = new
        entry = {"id": new, "name": c["name"]}
        if field == "categories":
            entry["supercategory"] = c["supercategory"] if isinstance(c.get("supercategory"), str) else "object"
        out.append(entry)
    return out, remap


def _from_coco(data: dict, v: Checker) -> dict:
    categories, cat_remap = _vocabulary(v, data["categories"], "categories")
    size = {}
    images = []
    for k, im in enumerate(data["images"]):
        f = f"images[{k}]"
        v.type(im, dict, f, "a JSON object")
        iid = v.integer(v.required(im, "id", f), f"{f}.id", minimum=0)
        size[iid] = (v.integer(v.required(im, "width", f), f"{f}.width", minimum=1),
                     v.integer(v.required(im, "height", f), f"{f}.height", minimum=1))
        images.append(im)

    annotations = []
    for k, a in enumerate(data["annotations"]):
        f = f"annotations[{k}]"
        v.type(a, dict, f, "a JSON object")
        out = dict(a)
        v.integer(v.required(a, "id", f), f"{f}.id")  # relationships name their objects by it
        cid = v.integer(v.required(a, "category_id", f), f"{f}.category_id")
        if cid not in cat_remap:
            v.fail(f"{f}.category_id", f"no category with id {cid}")
        out["category_id"] = cat_remap[cid]
        iid = v.integer(v.required(a, "image_id", f), f"{f}.image_id")
        if iid not in size:
            v.fail(f"{f}.image_id", f"no image with id {iid}")
        out["bbox"] = _clip_box(v.numbers(v.required(a, "bbox", f), 4, f"{f}.bbox"), size[iid])
        out.setdefault("iscrowd", 0)
        out.setdefault("area", out["bbox"][2] * out["bbox"][3])
        seg = a.get("segmentation")
        if seg is not None and not (isinstance(seg, dict) and isinstance(seg.get("counts"), str)):
            del out["segmentation"]  # polygons or uncompressed RLE: no metric reads them
        annotations.append(out)

    predicates, pred_remap = _vocabulary(v, data.get("predicate_categories") or [], "predicate_categories")
    by_name = {p["name"]: p["id"] for p in predicates}
    ann_image = {a["id"]: a["image_id"] for a in annotations}
    relationships = []
    rels = data.get("relationships") or []
    v.list(rels, "relationships")
    for k, r in enumerate(rels):
        f = f"relationships[{k}]"
        v.type(r, dict, f, "a JSON object")
        out = dict(r)
        if "predicate_id" in r:
            pid = v.integer(r["predicate_id"], f"{f}.predicate_id")
            if pid not in pred_remap:
                v.fail(f"{f}.predicate_id", f"no predicate with id {pid}")
            out["predicate_id"] = pred_remap[pid]
        else:  # Visual-Genome style: the predicate by name; the vocabulary grows as names appear
            name = v.string(v.required(r, "predicate", f), f"{f}.predicate")
            if name not in by_name:
                if pred_remap:
                    v.fail(f"{f}.predicate", f"{name!r} is not in predicate_categories")
                by_name[name] = len(by_name) + 1
                predicates.append({"id": by_name[name], "name": name})
            out.pop("predicate")
            out["predicate_id"] = by_name[name]
        out.setdefault("id", k)
        subject = r.get("subject_id")
        if "image_id" not in out and isinstance(subject, int) and subject in ann_image:
            out["image_id"] = ann_image[subject]
        relationships.append(out)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return {"info": {**info, "format": SIM2SG_FORMAT, "version": 1, "converted_from": "coco"},
            "images": images, "categories": categories, "annotations": annotations,
            "predicate_categories": predicates, "relationships": relationships}


def _clip_box(bbox: list, size: tuple[int, int]) -> list[float]:
    """COCO [x, y, w, h] clipped to the image when it reaches past it by less than a pixel."""
    w, h = size
    x1, y1, x2, y2 = bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]
    if x1 >= -1 and y1 >= -1 and x2 <= w + 1 and y2 <= h + 1:
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


def _from_vg(entries: list, v: Checker) -> dict:
    images, annotations, relationships = [], [], []
    categories: dict[str, int] = {}
    predicates: dict[str, int] = {}
    for k, e in enumerate(entries):
        f = f"[{k}]"
        v.type(e, dict, f, "a JSON object (one image's scene graph)")
        iid = v.integer(v.required(e, "image_id", f), f"{f}.image_id", minimum=0)
        if "width" not in e or "height" not in e:
            v.fail(f, "width and height are required (Visual Genome keeps them in image_data.json: add them)")
        w = v.integer(e["width"], f"{f}.width", minimum=1)
        h = v.integer(e["height"], f"{f}.height", minimum=1)
        name = e.get("file_name", e.get("url", f"{iid}.jpg"))
        images.append({"id": iid, "file_name": v.string(name, f"{f}.file_name"), "width": w, "height": h})
        ann_of = {}
        for j, o in enumerate(v.list(v.required(e, "objects", f), f"{f}.objects")):
            of = f"{f}.objects[{j}]"
            v.type(o, dict, of, "a JSON object")
            oid = v.integer(v.required(o, "object_id", of), f"{of}.object_id")
            names = o.get("names", [o["name"]] if "name" in o else None)
            if not isinstance(names, list) or not names:
                v.fail(f"{of}.names", "expected a non-empty list of class names")
            cat = v.string(names[0], f"{of}.names[0]")
            box = [v.number(v.required(o, key, of), f"{of}.{key}") for key in ("x", "y", "w", "h")]
            if not all(math.isfinite(b) for b in box):
                v.fail(of, "x, y, w, h must be finite")
            if oid in ann_of:
                v.fail(f"{of}.object_id", f"duplicate object id {oid} in this image")
            ann_of[oid] = len(annotations)
            annotations.append({"id": len(annotations), "image_id": iid, "category": cat,
                                "bbox": _clip_box(box, (w, h)), "iscrowd": 0, "object_id": oid})
        for j, r in enumerate(v.list(e.get("relationships", []), f"{f}.relationships")):
            rf = f"{f}.relationships[{j}]"
            v.type(r, dict, rf, "a JSON object")
            pred = v.string(v.required(r, "predicate", rf), f"{rf}.predicate")
            ends = []
            for key in ("subject_id", "object_id"):
                oid = v.integer(v.required(r, key, rf), f"{rf}.{key}")
                if oid not in ann_of:
                    v.fail(f"{rf}.{key}", f"no object with id {oid} in this image")
                ends.append(ann_of[oid])
            relationships.append({"id": len(relationships), "image_id": iid, "subject_id": ends[0],
                                  "object_id": ends[1], "predicate": pred})
            predicates.setdefault(pred, 0)
        for a in annotations[len(annotations) - len(ann_of):]:
            categories.setdefault(a["category"], 0)
    # Vocabularies in name order: a VG file has no ids to keep.
    cat_id = {c: i + 1 for i, c in enumerate(sorted(categories))}
    pred_id = {p: i + 1 for i, p in enumerate(sorted(predicates))}
    for a in annotations:
        a["category_id"] = cat_id[a.pop("category")]
        a["area"] = a["bbox"][2] * a["bbox"][3]
    for r in relationships:
        r["predicate_id"] = pred_id[r.pop("predicate")]
    return {"info": {"format": SIM2SG_FORMAT, "version": 1, "converted_from": "visual-genome"},
            "images": images,
            "categories": [{"id": i, "name": c, "supercategory": "object"} for c, i in cat_id.items()],
            "annotations": annotations,
            "predicate_categories": [{"id": i, "name": p} for p, i in pred_id.items()],
            "relationships": relationships}
