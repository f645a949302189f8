"""The content gap, measured: distances between two sets of scene graphs (e.g. generated vs the
target's true graphs) in the quantities Sim2SG aligns.

- count: per class, total-variation distance between the per-image object-count histograms,
  averaged over classes (0 = same distribution, 1 = disjoint).
- position: per class, 1-Wasserstein distance (meters) between the ground-plane x and between the
  y coordinates of all objects, averaged over axes and over classes present in both sets;
  `position_w1_any` the same over all objects whatever their class (where objects stand, apart
  from what they are: a detector that confuses classes raises the per-class figure only).
- predicate: total-variation distance between the predicate frequency distributions, plus the
  absolute difference of the mean number of relations per image.

`placement_error` is paired instead: each generated (lifted) scene against the true graph of the
target image it came from, object by object (how well the lift places what the detector found).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import networkx as nx
import numpy as np

from sim2sg.eval.boxes import box_iou


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum() if p.sum() > 0 else p
    q = q / q.sum() if q.sum() > 0 else q
    return float(0.5 * np.abs(p - q).sum())


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance between two 1-D samples (same units as the samples)."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    grid = np.linspace(0, 1, max(len(a), len(b)) * 4 + 1)[1:-1]
    return float(np.mean(np.abs(np.quantile(a, grid) - np.quantile(b, grid))))


def ground_w1(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean over x and y of the 1-Wasserstein distances (m) between ground positions a (N, 2) and
    b (M, 2); None when either is empty."""
    return float(np.mean([wasserstein_1d(a[:, k], b[:, k]) for k in range(2)])) if len(a) and len(b) else None


def content_gap(generated: Sequence[nx.MultiDiGraph], target: Sequence[nx.MultiDiGraph],
                categories: Sequence[str], predicates: Sequence[str]) -> dict:
    """Distances between graph sets `generated` and `target` (see the module docstring)."""
    def counts(graphs, c):
        return np.array([sum(1 for _, a in g.nodes(data=True) if a["category"] == c) for g in graphs], dtype=np.int64)

    def positions(graphs, c):  # c None: every object
        pts = [a["position"][:2] for g in graphs for _, a in g.nodes(data=True) if c is None or a["category"] == c]
        return np.array(pts, dtype=np.float64).reshape(-1, 2)

    per_class = {}
    for c in categories:
        cg, ct = counts(generated, c), counts(target, c)
        top = int(max(cg.max(initial=0), ct.max(initial=0))) + 1
        count_tv = _tv(np.bincount(cg, minlength=top).astype(float), np.bincount(ct, minlength=top).astype(float))
        pg, pt = positions(generated, c), positions(target, c)
        pos = ground_w1(pg, pt)
        per_class[c] = {"count_tv": count_tv, "mean_count_generated": float(cg.mean()) if len(cg) else 0.0,
                        "mean_count_target": float(ct.mean()) if len(ct) else 0.0, "position_w1": pos}

    def pred_hist(graphs):
        h = np.zeros(len(predicates))
        idx = {p: i for i, p in enumerate(predicates)}
        for g in graphs:
            for _, _, p in g.edges(keys=True):
                h[idx[p]] += 1
        return h

    hg, ht = pred_hist(generated), pred_hist(target)
    pg, pt = positions(generated, None), positions(target, None)
    pos_any = ground_w1(pg, pt)
    pos_vals = [v["position_w1"] for v in per_class.values() if v["position_w1"] is not None]
    return {
        "count_tv": float(np.mean([v["count_tv"] for v in per_class.values()])),
        "position_w1": float(np.mean(pos_vals)) if pos_vals else None,
        "position_w1_any": pos_any,
        "predicate_tv": _tv(hg, ht),
        "relations_per_image_diff": float(abs(hg.sum() / max(len(generated), 1) - ht.sum() / max(len(target), 1))),
        "per_class": per_class,
    }


def placement_matches(lifted: nx.MultiDiGraph, true: nx.MultiDiGraph, min_iou: float = 0.5) -> list[float]:
    """Ground distances (x, y, m) between the objects of `lifted` (a scene lifted from a target
    image's predicted graph) and the true objects they match in `true` (that image's true visible
    graph): one-to-one, same class, box IoU >= `min_iou`, greedily best overlap first. Boxes are
    compared in the true graph's pixel frame: a lifted box is scaled per axis from its graph
    camera's size to the true camera's (the loop squeezes the target images to the training size).
    Objects without a box take no part."""
    lo = [a for _, a in lifted.nodes(data=True) if a.get("box") is not None]
    to = [a for _, a in true.nodes(data=True) if a.get("box") is not None]
    if not lo or not to:
        return []
    lc, tc = lifted.graph.get("camera"), true.graph.get("camera")
    scale = np.ones(4) if lc is None or tc is None else np.array(
        [tc.width / lc.width, tc.height / lc.height] * 2, dtype=np.float64)
    iou = box_iou(np.array([a["box"] for a in lo]) * scale, np.array([a["box"] for a in to]))
    iou[np.array([a["category"] for a in lo])[:, None] != np.array([a["category"] for a in to])[None, :]] = 0.0
    errors, used_l, used_t = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(to))
        if iou[i, j] < min_iou:
            break
        if i in used_l or j in used_t:
            continue
        used_l.add(i)
        used_t.add(j)
        errors.append(math.dist(lo[i]["position"][:2], to[j]["position"][:2]))
    return errors


def placement_error(pairs: Sequence[tuple[nx.MultiDiGraph, nx.MultiDiGraph]], min_iou: float = 0.5) -> dict:
    """How far the lift put the objects it was given, over (lifted, true) pairs of graphs (see
    `placement_matches`). Returns {"matched", "lifted", "true": object counts (objects with a box),
    "median_m", "mean_m", "p90_m": over the matches (None when none)}."""
    errors, n_lifted, n_true = [], 0, 0
    for lifted, true in pairs:
        n_lifted += sum(a.get("box") is not None for _, a in lifted.nodes(data=True))
        n_true += sum(a.get("box") is not None for _, a in true.nodes(data=True))
        errors += placement_matches(lifted, true, min_iou)
    e = np.asarray(errors, dtype=np.float64)
    return {"matched": len(e), "lifted": n_lifted, "true": n_true,
            "median_m": float(np.median(e)) if len(e) else None, "mean_m": float(np.mean(e)) if len(e) else None,
            "p90_m": float(np.percentile(e, 90)) if len(e) else None}
