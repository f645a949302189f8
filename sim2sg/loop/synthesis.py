"""The synthesis step of Algorithm 1: predict on the unlabelled target images -> 2D graphs ->
lift to 3D (known camera, flat ground) -> looks (optionally cropped from the target images) ->
scenes; and the pseudo-label baseline's labels, from the same predictions.

The scenes are then rendered in memory by `sim2sg.dataset.synthesize.synthesize`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import networkx as nx
import numpy as np
import torch

from sim2sg import atomic
from sim2sg.dataset.synthesize import worker_map
from sim2sg.loop.config import LoopConfig
from sim2sg.loop.lift import lift_graph
from sim2sg.loop.target_look import write_target_look
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera
from sim2sg.scene.environment import Environment
from sim2sg.scene.sdr import nominal_camera, sample_scene, scene_rng
from sim2sg.train.adabn import target_batchnorm
from sim2sg.train.data import ListDataset
from sim2sg.train.predict import predict

TARGET_TEXTURES = "target"  # crops from the target images, under the run's texture folder


def target_camera(env: Environment, width: int, height: int) -> Camera:
    """The known camera of the target images: the environment's nominal camera (no jitter) at the
    target image size; on roads, over the ego lane of the narrowest road the environment makes."""
    ctx = {"kind": env.context["kind"]}
    if env.context["kind"] == "road":
        road = env.context["road"]
        ctx.update(lanes=road["lanes"][0], lane_width=float(np.mean(road["lane_width"])))
    return nominal_camera(env, ctx).resized(width, height)


def target_cameras(env: Environment, cfg: LoopConfig, images) -> Camera | tuple[Camera, ...]:
    """The target images' camera(s) at the training size cfg.width x cfg.height: the nominal
    camera (`target_camera`), or with `cfg.target_camera` one camera per image from the user's
    calibration (`sim2sg.scene.calib.target_cameras`, at each image's own size), its intrinsics
    scaled per axis to the training size - exactly as the images are resized for the network."""
    nominal = target_camera(env, cfg.width, cfg.height)
    if not cfg.target_camera:
        return nominal
    from sim2sg.scene.calib import target_cameras as read_cameras

    return tuple(c.resized(cfg.width, cfg.height) for c in read_cameras(cfg.target_camera, images, nominal))


def camera_of(cameras: Camera | tuple[Camera, ...], k: int) -> Camera:
    """Target image k's camera: the one camera of the folder, or image k's own."""
    return cameras if isinstance(cameras, Camera) else cameras[k]


def predict_target(state, amp: bool, target, batch: int = 32, bn_images: int = 0) -> list[dict]:
    """Eval-mode model outputs (host tensors) on every target image; with `bn_images` > 0 the
    BatchNorm statistics come from the first `bn_images` target images (`target_statistics`)."""
    outs = []
    with target_statistics(state, amp, target, bn_images):
        for s in range(0, len(target), batch):
            outs += predict(state.model, [target[i][0] for i in range(s, min(len(target), s + batch))], state.device,
                            amp)
    return outs


def target_statistics(state, amp: bool, target, n_images: int, batch: int = 32):
    """Context: the model's BatchNorm layers normalise with statistics of the first `n_images`
    target images (AdaBN, `sim2sg.train.adabn.target_batchnorm`; 0: unchanged). The backbone sees
    the images exactly as in `predict` (`model.backbone_features`, autocast on CUDA)."""
    n = min(len(target), max(0, n_images))
    model, dev = state.model, state.device

    def forward(idx):
        ims = [target[i][0].to(dev) for i in idx]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            model.backbone_features(ims)

    return target_batchnorm(model, forward, [range(s, min(n, s + batch)) for s in range(0, n, batch)])


def write_generated(path: Path, jobs: list, made: list) -> None:
    """One JSON line per generated scene, gzipped (same input, same bytes): {"target": index of
    the target image, "lifted": whether the scene came from its prediction (else an SDR fallback),
    "predicted": the predicted graph above the score threshold, "generated": the 3D scene graph
    (`sim2sg.scene.graph.to_dict` objects)}. So a user can see what the synthesis step made of each image."""
    lines = [json.dumps({"target": k, "lifted": src >= 0, "predicted": sg.to_dict(pred), "generated": sg.to_dict(g)},
                        sort_keys=True, default=json_default)
             for (k, _, pred, *_), (g, _, src) in zip(jobs, made)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


def generate_scenes(jobs: list, env: Environment, cam: Camera | tuple[Camera, ...], cfg: LoopConfig, it: int,
                    textures: Path,
                    workers: int | None = None) -> list[tuple[nx.MultiDiGraph, object, int]]:
    """The synthesis step's CPU half for each job (k, r, predicted graph, target image (H, W, 3)
    uint8 or None, (N, 4) px boxes of every detection or None, seed): lift the predicted graph to
    3D (an SDR scene when nothing can be lifted) and, with an image, crop its target textures
    (`sim2sg.loop.target_look`). Returns [(graph, TargetLook or None, k or -1 for an SDR scene)].
    cam: the target camera, or one per target image (`target_cameras`).

    Each job draws from its own generator (its seed), so the result does not depend on `workers`:
    `sim2sg.dataset.synthesize.worker_map` (forked processes; None = min(8, CPUs - 1), 0 = here).
    """
    with worker_map(len(jobs), workers) as pmap:
        return pmap(_generate_one, jobs, env, cam, (cfg.score_threshold, cfg.min_fit_iou), cfg.seed,
                    cfg.scenes_per_image, it, str(textures))


def _generate_one(job, env: Environment, cam: Camera, gates: tuple[float, float], seed: int, per_image: int,
                  it: int, textures: str):
    k, r, pred, image, boxes, job_seed = job
    cam = camera_of(cam, k)
    rng = np.random.default_rng(job_seed)
    g = lift_graph(pred, env, cam, rng, score_threshold=gates[0], min_fit_iou=gates[1])
    if len(g) == 0:  # nothing detected (or nothing liftable): fall back to an SDR scene
        return sample_scene(env, scene_rng(seed + 1000 * it, k * per_image + r)), None, -1
    look = None
    if image is not None:
        look = write_target_look(image, g, cam, boxes, rng, Path(textures), f"{TARGET_TEXTURES}/it{it}/{k:06d}_{r}")
    return g, look, k


def pseudo_labels(state, amp: bool, target, threshold: float, bn_images: int = 0) -> ListDataset:
    """Self-training data: target images with the model's confident detections (score >= threshold)
    and relations (predicate score >= threshold) as labels; images with no detection are skipped."""
    items = []
    for k, o in enumerate(predict_target(state, amp, target, bn_images=bn_images)):
        keep = (o["scores"] >= threshold).nonzero().flatten()
        if len(keep) == 0:
            continue
        remap = {int(i): n for n, i in enumerate(keep.tolist())}
        trip = set()
        for (s, ob), sc in zip(o["rel_pairs"].tolist(), o["rel_scores"]):
            if s in remap and ob in remap:
                for p in (sc[1:] >= threshold).nonzero().flatten().tolist():
                    trip.add((remap[s], remap[ob], p + 1))
        boxes = o["boxes"][keep].float()
        ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        if not bool(ok.all()):
            continue
        items.append((target[k][0], {"boxes": boxes, "labels": o["labels"][keep].long(),
                                     "relations": torch.tensor(sorted(trip), dtype=torch.int64).reshape(-1, 3),
                                     "image_id": k}))
    return ListDataset(items)


def json_default(x):
    """JSON for numpy scalars (and NaN as null) in the run's files."""
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and x != x:
        return None
    return str(x)
