"""The lift's score threshold, calibrated without target labels (`LoopConfig.score_threshold="auto"`).

The synthesis step lifts the detections scoring at least a threshold. A young detector's scores
are low, and lower still on the target (the domain gap), so a fixed threshold that suits one model
drops most of another's objects: the demo preset's SDR-phase model lifted 6.7 objects per clevr-
target image at 0.3 against 11.9 true ones, and 12.3 at 0.15 (benchmarks/log/2026-12-07-session4-
lift-threshold.md). Without target labels, the threshold is chosen on labelled source scenes the
model has not trained on: the one at which lifting its predictions there gives, on average, as
many objects per image as the scenes hold. The target's lower scores still make it undercount
there, but much less than a fixed threshold does (the demo preset's first iteration: count TV
0.44 -> 0.16 over 3 seeds). Limit, measured: once the network has trained on target-like scenes
its target scores rise while the source scenes keep asking for the same threshold, so later
iterations lift more objects than the target holds (the demo's third iteration: 15 per image
against 12); the calibration follows the source, not the target.

Frames: boxes in pixels of the training size; each calibration scene is lifted with its own
camera (SDR scenes are rendered with a jittered camera each), resized to that size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

from sim2sg.dataset.synthesize import synthesize
from sim2sg.loop.lift import lift_graph
from sim2sg.loop.synthesis import predict_target
from sim2sg.render.sample import Sample
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera
from sim2sg.scene.environment import Environment
from sim2sg.scene.sdr import sample_scenes
from sim2sg.train.data import SampleDataset
from sim2sg.train.predict import graph_from_prediction

# Candidate thresholds: the lifted count falls with the threshold, so a bisection over this grid
# needs ~6 lifts of the calibration scenes.
GRID = tuple(round(float(t), 3) for t in np.arange(0.05, 0.951, 0.025))
SCENES = 128  # held-out SDR scenes the threshold is calibrated on


@dataclass(frozen=True)
class Calibration:
    """threshold: the chosen one; lifted / objects: mean objects per calibration image, lifted at
    it / true (the scene graphs'); scenes: how many."""

    threshold: float
    lifted: float
    objects: float
    scenes: int

    def describe(self) -> str:
        return (f"lift threshold {self.threshold:.3f} (calibrated on {self.scenes} held-out SDR scenes: "
                f"{self.lifted:.2f} lifted vs {self.objects:.2f} objects per image)")


def lifted_count(outs: list[dict], cameras: list[Camera], env: Environment, threshold: float,
                 min_fit_iou: float, seed: int) -> float:
    """Mean objects per image that the loop's lift makes of model outputs `outs` (as `predict`
    returns them) at `threshold`, image k lifted with cameras[k] and its own generator."""
    n = 0
    for k, (o, cam) in enumerate(zip(outs, cameras)):
        pred = graph_from_prediction(o, env.categories, env.predicates, cam, env.name, score_thresh=threshold,
                                     rel_thresh=None)
        if len(pred):
            n += len(lift_graph(pred, env, cam, np.random.default_rng([seed, k]), score_threshold=threshold,
                                min_fit_iou=min_fit_iou))
    return n / max(1, len(outs))


def object_count(g: nx.MultiDiGraph, env: Environment) -> int:
    """Objects of the environment's classes in a scene graph."""
    return sum(1 for _, a in sg.objects(g) if a["category"] in env.category_specs)


def calibrate(outs: list[dict], cameras: list[Camera], objects: list[int], env: Environment, min_fit_iou: float,
              seed: int = 0, grid: tuple[float, ...] = GRID) -> Calibration:
    """The grid threshold whose mean lifted count on the calibration images (model outputs `outs`;
    each image's camera at the outputs' pixel size, and its true object count) is nearest their
    mean true count. Bisection: the lifted count does not grow with the threshold (fewer
    detections pass; in rare cases the lift's collision test lets one more through, which the
    bisection tolerates: it then picks a neighbour of the best)."""
    if not outs or not len(outs) == len(cameras) == len(objects):
        raise ValueError(f"calibration needs one camera and count per output, got {len(outs)}, {len(cameras)}, "
                         f"{len(objects)}")
    mean = float(np.mean(objects))
    cache: dict[int, float] = {}

    def count(i: int) -> float:
        if i not in cache:
            cache[i] = lifted_count(outs, cameras, env, grid[i], min_fit_iou, seed)
        return cache[i]

    lo, hi = 0, len(grid) - 1  # the first grid index whose count is <= mean lies in [lo, hi]
    if count(lo) <= mean:
        hi = lo
    elif count(hi) > mean:
        lo = hi
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(mid) > mean else (lo, mid)
    best = min({lo, hi}, key=lambda i: (abs(count(i) - mean), i))
    return Calibration(grid[best], count(best), mean, len(outs))


def held_out_scenes(env: Environment, seed: int, first: int, options, device, textures: Path,
                    batch: int = 256) -> list[tuple[Sample, int]]:
    """`SCENES` SDR scenes the run never trains on (indices first.. of its seed's SDR stream, which
    trains on 0..first-1), rendered as the SDR scenes are, each with its true object count."""
    graphs = list(sample_scenes(env, seed, SCENES, start=first))
    samples = synthesize(graphs, [f"calibration_{i:06d}" for i in range(SCENES)], env, options, device,
                         np.random.default_rng([seed, 3]), textures, batch=batch)
    return [(s, object_count(g, env)) for s, g in zip(samples, graphs)]


def calibrate_model(state, amp: bool, scenes: list[tuple[Sample, int]], env: Environment,
                    min_fit_iou: float, seed: int = 0) -> Calibration:
    """`calibrate` on the eval-mode outputs of the network of training state `state` for
    `held_out_scenes` (the training BatchNorm statistics: these are source images)."""
    outs = predict_target(state, amp, SampleDataset([x for x, _ in scenes], list(env.predicates)))
    return calibrate(outs, [x.camera for x, _ in scenes], [n for _, n in scenes], env, min_fit_iou, seed)
