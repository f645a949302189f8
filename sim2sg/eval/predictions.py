"""The predictions JSON format (docs/formats.md, "Predictions JSON"): reading and validation.

Any model's output can be scored by writing this file::

    {"format": "sim2sg-predictions", "version": 1,
     "predicate_names": ["__background__", "front", "behind", "left", "right"],
     "images": [{"image_id": 0, "file_name": "images/000000.png",
                 "objects": [{"box": [x1, y1, x2, y2], "category": "cube", "score": 0.98}],
                 "relations": [{"subject": 0, "object": 1, "scores": [0.1, 0.7, 0.0, 0.9, 0.0]}]}]}

Every problem is one `InputError` naming the file and the field (``images[3].objects[2].box``).
Checks that need the ground truth (unknown category or predicate names, unknown images) happen
when predictions are matched to it, in `sim2sg.eval.metrics.align_predictions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim2sg.checks import read_json
from sim2sg.errors import InputError

FORMAT = "sim2sg-predictions"
VERSION = 1
BACKGROUND = "__background__"


@dataclass(frozen=True)
class ImagePrediction:
    """One image's predictions, straight from the file.

    - ``image_id`` int or None, ``file_name`` str or None (at least one is set).
    - ``boxes`` (M, 4) float64 ``[x1, y1, x2, y2]`` pixels, no +1; ``categories`` M names;
      ``scores`` (M,) float64 in [0, 1].
    - ``pairs`` (P, 2) int64 ``(subject, object)`` indices into the objects;
      ``rel_scores`` (P, len(predicate_names)) float64 in [0, 1], column 0 = background.
    """

    image_id: int | None
    file_name: str | None
    boxes: np.ndarray
    categories: tuple[str, ...]
    scores: np.ndarray
    pairs: np.ndarray
    rel_scores: np.ndarray


@dataclass(frozen=True)
class Predictions:
    """A predictions file: ``predicate_names[0]`` is ``"__background__"``; ``source`` names the
    file for error messages."""

    source: str
    predicate_names: tuple[str, ...]
    images: tuple[ImagePrediction, ...]


@dataclass(frozen=True)
class AlignedPrediction:
    """One image's predictions in the ground truth's vocabulary (what the metrics consume).

    - ``boxes`` (M, 4) float64 ``[x1, y1, x2, y2]`` pixels, no +1; ``labels`` (M,) int64 GT
      category ids; ``scores`` (M,) float64 in [0, 1].
    - ``pairs`` (P, 2) int64 ``(subject, object)`` object indices.
    - ``rel_scores`` (P, F) float64: foreground predicate scores, column ``j`` is the GT's ``j``-th
      predicate id in increasing order; background is dropped (it never forms a triplet).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    pairs: np.ndarray
    rel_scores: np.ndarray

    @staticmethod
    def empty(num_predicates: int) -> "AlignedPrediction":
        return AlignedPrediction(
            np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0),
            np.zeros((0, 2), np.int64), np.zeros((0, num_predicates)),
        )


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _probability(v, source, field) -> float:
    if not _is_number(v) or not math.isfinite(v):
        raise InputError(source, field, f"expected a finite number, got {v!r}")
    if not 0.0 <= v <= 1.0:
        # Triplet scores are products of scores: a logit or negative value would rank wrongly.
        raise InputError(source, field, f"expected a score in [0, 1], got {v!r}")
    return float(v)


def _index(v, n, source, field) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(source, field, f"expected an integer index, got {v!r}")
    if not 0 <= v < n:
        raise InputError(source, field, f"index {v} out of range: the image has {n} objects")
    return v


def _parse_image(im, i: int, n_pred: int, source: str) -> ImagePrediction:
    f = f"images[{i}]"
    if not isinstance(im, dict):
        raise InputError(source, f, "expected an object")
    image_id = im.get("image_id")
    if image_id is not None and (isinstance(image_id, bool) or not isinstance(image_id, int)):
        raise InputError(source, f + ".image_id", f"expected an integer, got {image_id!r}")
    file_name = im.get("file_name")
    if file_name is not None and (not isinstance(file_name, str) or not file_name):
        raise InputError(source, f + ".file_name", f"expected a non-empty string, got {file_name!r}")
    if image_id is None and file_name is None:
        raise InputError(source, f, "needs image_id or file_name to be matched to the ground truth")

    objects = im.get("objects")
    if not isinstance(objects, list):
        raise InputError(source, f + ".objects", "expected a list of objects")
    boxes, cats, scores = [], [], []
    for j, ob in enumerate(objects):
        g = f"{f}.objects[{j}]"
        if not isinstance(ob, dict):
            raise InputError(source, g, "expected an object")
        box = ob.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise InputError(source, g + ".box", f"expected [x1, y1, x2, y2], got {box!r}")
        for v in box:
            if not _is_number(v) or not math.isfinite(v):
                raise InputError(source, g + ".box", f"expected finite numbers, got {box!r}")
        if box[2] < box[0] or box[3] < box[1]:
            raise InputError(source, g + ".box", f"x2 < x1 or y2 < y1 in {box!r}")
        cat = ob.get("category")
        if not isinstance(cat, str) or not cat:
            raise InputError(source, g + ".category", f"expected a category name, got {cat!r}")
        boxes.append([float(v) for v in box])
        cats.append(cat)
        scores.append(_probability(ob.get("score"), source, g + ".score"))

    relations = im.get("relations", [])
    if not isinstance(relations, list):
        raise InputError(source, f + ".relations", "expected a list")
    pairs, rel_scores, seen = [], [], set()
    for j, r in enumerate(relations):
        g = f"{f}.relations[{j}]"
        if not isinstance(r, dict):
            raise InputError(source, g, "expected an object")
        s = _index(r.get("subject"), len(objects), source, g + ".subject")
        o = _index(r.get("object"), len(objects), source, g + ".object")
        if s == o:
            raise InputError(source, g, f"subject and object are the same object ({s})")
        if (s, o) in seen:
            # Under graph constraint a pair yields one triplet; a repeated pair would yield two.
            raise InputError(source, g, f"pair ({s}, {o}) listed twice; give all its predicate scores in one entry")
        seen.add((s, o))
        sc = r.get("scores")
        if not isinstance(sc, list) or len(sc) != n_pred:
            got = len(sc) if isinstance(sc, list) else type(sc).__name__
            raise InputError(source, g + ".scores",
                             f"expected {n_pred} scores (one per predicate_names entry), got {got}")
        pairs.append([s, o])
        rel_scores.append([_probability(v, source, f"{g}.scores[{k}]") for k, v in enumerate(sc)])

    return ImagePrediction(
        image_id=image_id,
        file_name=file_name,
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        categories=tuple(cats),
        scores=np.asarray(scores, dtype=np.float64),
        pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        rel_scores=np.asarray(rel_scores, dtype=np.float64).reshape(-1, n_pred),
    )


def parse_predictions(data, source: str | Path = "<predictions>") -> Predictions:
    """Validate a predictions dict (as read from JSON or returned by a model) into `Predictions`."""
    source = str(source)
    if not isinstance(data, dict):
        raise InputError(source, "", "expected a JSON object")
    if data.get("format") != FORMAT:
        raise InputError(source, "format", f"expected {FORMAT!r}, got {data.get('format')!r}")
    if isinstance(data.get("version"), bool) or data.get("version") != VERSION:  # true == 1 in Python
        raise InputError(source, "version",
                         f"unsupported version {data.get('version')!r} (expected {VERSION})")
    names = data.get("predicate_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise InputError(source, "predicate_names", "expected a non-empty list of names")
    if names[0] != BACKGROUND:
        raise InputError(source, "predicate_names[0]", f"must be {BACKGROUND!r}, got {names[0]!r}")
    if len(set(names)) != len(names):
        raise InputError(source, "predicate_names", "names must be unique")
    images = data.get("images")
    if not isinstance(images, list):
        raise InputError(source, "images", "expected a list")
    parsed = tuple(_parse_image(im, i, len(names), source) for i, im in enumerate(images))
    return Predictions(source, tuple(names), parsed)


def load_predictions(path: str | Path) -> Predictions:
    """Read and validate a predictions JSON file (format in the module docstring)."""
    path = Path(path)
    return parse_predictions(read_json(path, "predictions file"), path)
