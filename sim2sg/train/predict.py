"""Prediction with a trained checkpoint: a predictions JSON for a dataset (what `sim2sg eval
--checkpoint` scores) and scene-graph files + drawings for a folder of images (`sim2sg predict`).

Predicted scene graphs have boxes and scores but no 3D yet (that is the lift step's job). They are
written in the version-1 scene-graph format, whose objects require a position, yaw and size, with
these documented placeholders: position (0, 0, 0), yaw 0, size (1, 1, 1), and
``attributes = {"lifted": false}`` marking every 3D field as unknown. The camera is a placeholder
too (the image size with fx = fy = max(W, H), principal point at the centre, looking along +Y from
1 m above the origin) and ``context = {"predicted": true, "camera_known": false}``.
Object ids are the detection indices (0 = highest score) among the detections kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from sim2sg import atomic
from sim2sg.checks import parse_json
from sim2sg.device import resolve_device
from sim2sg.errors import InputError
from sim2sg.eval import evaluate, load_ground_truth
from sim2sg.scene.camera import Camera
from sim2sg.scene.graph import add_object, add_relation, new_graph, write_graph
from sim2sg.train.checkpoint import load_checkpoint, model_from_checkpoint
from sim2sg.train.data import LabelledDataset, check_vocabulary, list_images, read_image
from sim2sg.train.draw import draw_graph, select_graph


@torch.no_grad()
def predict(model, images: list[torch.Tensor], device, amp: bool = True) -> list[dict]:
    """Eval-mode outputs for (3, H, W) images in [0, 1], moved to the CPU as float tensors."""
    model.eval()
    images = [im.to(device) for im in images]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        outs = model(images)
    return [{k: (v.float() if v.is_floating_point() else v).cpu() for k, v in o.items()} for o in outs]


def outputs_to_record(out: dict, categories, digits: int = 5) -> dict:
    """One model output -> a predictions-JSON image record's objects and relations (formats.md)."""
    objects = [{"box": [round(float(v), 3) for v in b], "category": categories[int(c) - 1], "score": round(float(s), digits)}
               for b, c, s in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist())]
    relations = [{"subject": int(p[0]), "object": int(p[1]), "scores": [round(float(x), digits) for x in s]}
                 for p, s in zip(out["rel_pairs"].tolist(), out["rel_scores"].tolist())]
    return {"objects": objects, "relations": relations}


def predict_labelled(model, dataset: LabelledDataset, device, batch_size: int = 8, amp: bool = True,
                     categories=None, predicates=None) -> dict:
    """Predictions of `model` on a labelled dataset in the predictions format (formats.md) and
    their metrics (`sim2sg.eval.evaluate`): returns {"predictions": dict, "metrics": dict}. Names
    default to the dataset's own vocabulary."""
    categories = list(categories or dataset.info.categories)
    predicates = list(predicates or dataset.info.predicates)
    records = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        outs = predict(model, [im for im, _ in items], device, amp)
        for (_, t), o, k in zip(items, outs, range(start, start + len(items))):
            records.append({"image_id": t["image_id"], "file_name": dataset.images[k]["file_name"],
                            **outputs_to_record(o, categories)})
    preds = {"format": "sim2sg-predictions", "version": 1,
             "predicate_names": ["__background__", *predicates], "images": records}
    metrics = evaluate(load_ground_truth(dataset.root), preds)
    return {"predictions": preds, "metrics": metrics}


def load_predictor(checkpoint: str | Path, device: str = "auto"):
    """(model in eval mode on the device, meta dict, torch.device) from a checkpoint file."""
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint)
    try:
        model = model_from_checkpoint(ckpt, dev)
    except (RuntimeError, TypeError, KeyError) as e:
        raise InputError(checkpoint, "model", f"weights do not fit the stored model config ({type(e).__name__})") from None
    model.eval()
    return model, ckpt["meta"], dev


def _kitti_images(data_dir: Path) -> list[Path] | None:
    for d in (data_dir / "image_2", data_dir / "training" / "image_2"):
        if d.is_dir():
            return list_images(d)
    return None


def predict_dataset(checkpoint: Path, data_dir: Path, device: str = "auto", batch_size: int = 8) -> dict:
    """Predictions dict (docs/formats.md, "Predictions JSON") of `checkpoint` on `data_dir`: a
    sim2sg dataset (labels.json; image_id and file_name from it) or a KITTI folder (image_2/ or
    training/image_2/; image_id = int(stem) when the stem is a number, file_name
    "image_2/<stem>.png"). Each image lists every detection (score >= the model's box score
    threshold, at most `detections_per_img`) and the best `rel_max_pairs_test` ordered pairs among
    the top `rel_top_objects`, with scores [background, predicates...] (see
    `sim2sg.model.relation_head.predicate_scores`)."""
    data_dir = Path(data_dir)
    model, meta, dev = load_predictor(checkpoint, device)
    cats, preds = meta["categories"], meta["predicates"]
    if (data_dir / "labels.json").is_file() or _kitti_images(data_dir) is None:
        # before predicting the whole set: a dataset of other class names could not score it
        check_vocabulary(data_dir, cats, preds, "--data")
        ds = LabelledDataset(data_dir)
        items = [(int(im["id"]), im["file_name"], ds.root / im["file_name"]) for im in ds.images]
    else:
        files = _kitti_images(data_dir)
        items = [(int(p.stem) if p.stem.isdigit() else k, f"image_2/{p.name}", p) for k, p in enumerate(files)]
    records = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        outs = predict(model, [read_input(p, model.cfg.image_size) for _, _, p in chunk], dev)
        for (iid, name, _), o in zip(chunk, outs):
            records.append({"image_id": iid, "file_name": name, **outputs_to_record(o, cats)})
    return {"format": "sim2sg-predictions", "version": 1,
            "predicate_names": ["__background__", *preds], "images": records}


@dataclass(frozen=True)
class PredictResult:
    """What `predict_images` did: the graph files written, and one `InputError` per unreadable
    image (in file order; those images have no outputs)."""

    written: list[Path]
    failed: list[InputError]


PREDICTIONS_FILE = "predictions.json"
PARTIAL_FILE = "predictions.partial.json"  # the stems a run in progress (or killed) may have written


def predict_images(checkpoint: str | Path, images_dir: str | Path, out_dir: str | Path, device: str = "auto",
                   score_thresh: float = 0.5, rel_thresh: float = 0.5, batch_size: int = 8,
                   overwrite: bool = False) -> PredictResult:
    """For each png/jpg in `images_dir`: `out_dir/<stem>.json` (scene graph, see the module
    docstring: objects with score >= score_thresh; a triplet for every predicate whose score >=
    rel_thresh between two kept objects, so one pair may give several) and `out_dir/<stem>.png`
    (boxes and triplets drawn). Also writes `out_dir/predictions.json` with every detection and
    pair (predictions format, file_name = the image's name), last. An unreadable image is recorded
    in the result and skipped: the others are predicted in the batches of a folder without it.

    `out_dir` never mixes two runs. An earlier run's outputs there (those its predictions.json
    lists, or a killed run's predictions.partial.json) are deleted before the first new file is
    written; when some of them belong to images this run does not have, the run is refused with an
    `InputError` (before any output is written) unless `overwrite`. predictions.partial.json lists
    the stems a run may have written until its predictions.json is in place."""
    model, meta, dev = load_predictor(checkpoint, device)
    files = list_images(images_dir)
    out_dir = Path(out_dir)
    stems = {p.stem for p in files}
    earlier = earlier_outputs(out_dir)
    others = sorted(earlier - stems)
    if others and not overwrite:
        raise InputError(out_dir / PREDICTIONS_FILE, "", f"holds another run's predictions ({len(others)} image(s) "
                         f"not in {images_dir}, e.g. {others[0]}.json): predict into a new folder, or pass "
                         "--overwrite to replace them")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / PARTIAL_FILE, json.dumps({"format": "sim2sg-predict-partial", "version": 1,
                                                          "stems": sorted(earlier | stems)}) + "\n")
    (out_dir / PREDICTIONS_FILE).unlink(missing_ok=True)
    for stem in earlier:
        for suffix in (".json", ".png"):
            (out_dir / f"{stem}{suffix}").unlink(missing_ok=True)
    cats, preds = meta["categories"], meta["predicates"]
    written, records, failed = [], [], []
    for chunk in _readable_batches(files, batch_size, failed, model.cfg.image_size):
        images = [img for _, img in chunk]
        outs = predict(model, images, dev)
        for (path, img), o in zip(chunk, outs):
            o_np = {k: v.numpy() for k, v in o.items()}
            g = graph_from_prediction(o_np, cats, preds, placeholder_camera(*img.shape[-2:]), meta.get("env", "unknown"),
                                      score_thresh=score_thresh, rel_thresh=rel_thresh, attributes={"lifted": False},
                                      context={"predicted": True, "camera_known": False})
            gpath = out_dir / f"{path.stem}.json"
            write_graph(gpath, g)
            rgb = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            pic = draw_graph(rgb, o_np, cats, preds, score_thresh, rel_thresh)
            ok, png = cv2.imencode(".png", cv2.cvtColor(pic, cv2.COLOR_RGB2BGR))
            atomic.write_bytes(out_dir / f"{path.stem}.png", png.tobytes())
            records.append({"file_name": path.name, **outputs_to_record(o, cats)})
            written.append(gpath)
    atomic.write_text(out_dir / PREDICTIONS_FILE, json.dumps(
        {"format": "sim2sg-predictions", "version": 1, "predicate_names": ["__background__", *preds],
         "images": records}) + "\n")
    (out_dir / PARTIAL_FILE).unlink()
    return PredictResult(written, failed)


def earlier_outputs(out_dir: Path) -> set[str]:
    """The stems of an earlier `predict_images` run's outputs in `out_dir` (<stem>.json, <stem>.png):
    those its predictions.json lists and those a killed run's predictions.partial.json lists.
    `InputError` for either file when it is not what a predict run writes (its list is unknown)."""
    stems: set[str] = set()
    for name, key in ((PREDICTIONS_FILE, "images"), (PARTIAL_FILE, "stems")):
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            data = parse_json(path.read_bytes(), path)  # depth and number limits: a hostile file is one error
            entries = data[key]
            names = [Path(e["file_name"]).stem if key == "images" else e for e in entries]
            if not all(isinstance(n, str) and n and "/" not in n for n in names):
                raise TypeError
        except (OSError, ValueError, TypeError, KeyError, InputError):
            raise InputError(path, "", "is not the output of an earlier `sim2sg predict`, so its files are "
                                       "unknown: predict into a new folder") from None
        stems.update(names)
    return stems


def read_input(path: Path, image_size: tuple[int, int]) -> torch.Tensor:
    """`read_image`, and an `InputError` for an image the network cannot take: Faster R-CNN scales
    an image to fit `image_size` (H, W) keeping its aspect ratio, so a short side less than
    1/max(H, W) of the long one shrinks to no pixels."""
    img = read_image(path)
    h, w = img.shape[-2:]
    if max(h, w) >= min(h, w) * max(image_size):
        raise InputError(path, "", f"{w}x{h} pixels is too elongated for the network "
                                   f"(at most {max(image_size) - 1}:1 at its {image_size[1]}x{image_size[0]} input)")
    return img


def _readable_batches(files: list[Path], batch_size: int, failed: list, image_size: tuple[int, int]):
    """Batches (lists of (path, image)) of the readable `files` in order; the `InputError` of an
    unreadable one (or one the network cannot take, or one whose outputs would replace another's)
    goes to `failed`."""
    # predictions.json and predictions.partial.json are written beside the graphs
    batch, stems = [], {Path(PREDICTIONS_FILE).stem: None, Path(PARTIAL_FILE).stem: None}
    for path in files:
        try:
            if path.stem in stems:  # a.png and a.jpg: both would write a.json and a.png
                other = f"that of {stems[path.stem].name}" if stems[path.stem] else "the predictions file"
                raise InputError(path, "", f"its graph {path.stem}.json would replace {other}: rename the image")
            stems[path.stem] = path
            batch.append((path, read_input(path, image_size)))
        except InputError as e:
            failed.append(e)
            continue
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def kept_summary(predictions: dict, score_thresh: float) -> str:
    """One line on what a predictions dict keeps at `score_thresh`, with a hint when it keeps
    nothing: "12 objects on 4 images" or "0 objects scored 0.5 or more (highest score 0.38: try
    --score-thresh 0.3)"."""
    scores = [o["score"] for im in predictions["images"] for o in im["objects"]]
    kept = sum(s >= score_thresh for s in scores)
    n = len(predictions["images"])
    line = f"{kept} object{'' if kept == 1 else 's'} on {n} image{'' if n == 1 else 's'} scored {score_thresh} or more"
    if kept == 0:
        best = max(scores, default=None)
        line += (" (no detections at all)" if best is None else
                 f" (highest score {best:.2f}: try --score-thresh {max(0.0, np.floor(best * 20) / 20):.2f})")
    return line


def placeholder_camera(height: int, width: int) -> Camera:
    """The stand-in camera of predicted graphs (module docstring): intrinsics from the image size
    only; the pose is arbitrary and flagged by context["camera_known"] = False."""
    f = float(max(width, height))
    return Camera(int(width), int(height), f, f, width / 2.0, height / 2.0, (0.0, 0.0, 1.0), (0.0, 1.0, 1.0))


def graph_from_prediction(pred: dict, categories, predicates, camera: Camera, env: str, *,
                          score_thresh: float = 0.5, rel_thresh: float | None = 0.5,
                          context: dict | None = None, attributes: dict | None = None):
    """The one conversion of a model output into a 2D scene graph (networkx).

    pred: one output as `predict` returns it (tensors or numpy arrays: boxes (D, 4) px, labels
    (D,) 1-based, scores (D,), rel_pairs (M, 2), rel_scores (M, P + 1)). Detections scoring at
    least `score_thresh` become objects with id = their detection index, the box clamped to the
    `camera`'s image (a box empty after clamping is dropped), the score clamped to [0, 1], and
    placeholder 3D fields (position (0, 0, 0), yaw 0, size (1, 1, 1)) plus `attributes`.
    rel_thresh: every predicate scoring at least this between two kept objects is a relation
    (None: no relations; the lift derives them in 3D). camera: the image's camera (the loop's
    known target camera, or `placeholder_camera`); context: the graph's context (default {}).
    """
    if rel_thresh is None:
        keep = [int(i) for i in np.nonzero(np.asarray(pred["scores"], dtype=np.float64) >= score_thresh)[0]]
        triplets = []
    else:
        keep, triplets = select_graph(pred, score_thresh, rel_thresh)
    g = new_graph(env, camera, dict(context or {}))
    lim = (camera.width, camera.height) * 2
    boxes = np.asarray(pred["boxes"], dtype=np.float32).reshape(-1, 4).tolist()
    kept = set()
    for i in keep:
        b = [min(max(v, 0.0), m) for v, m in zip(boxes[i], lim)]
        if b[2] > b[0] and b[3] > b[1]:
            add_object(g, i, categories[int(pred["labels"][i]) - 1], (0.0, 0.0, 0.0), 0.0, (1.0, 1.0, 1.0),
                       attributes=attributes, box=b, score=min(1.0, max(0.0, float(pred["scores"][i]))))
            kept.add(i)
    for s, p, o in triplets:
        if s in kept and o in kept:
            add_relation(g, s, predicates[p - 1], o)
    return g
