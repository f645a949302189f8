"""Meta-Sim (Kar et al., ICCV 2019), a scene-generation baseline of the paper's Table 3: learn how
the SDR generator places objects so that rendered images resemble the target's, by matching the
task network's features of rendered and target images (maximum mean discrepancy).

What it learns (`AttributeParams`): for every category c, a shift and a scale of the SDR
distribution of ground positions and a yaw offset,

    position' = m_c + exp(s_c) * (position - m_c) + t_c * sd_c    (x and y, world metres; z kept)
    yaw'      = yaw + 90 deg * r_c

with m_c, sd_c the mean and standard deviation of the category's SDR positions
(`sdr_statistics`), so the parameters are unitless and 0 is the SDR generator itself. Objects
standing on another ("on" relations) move with their support. Relations are derived again from
the new geometry. Like Meta-Sim it cannot change the number or the types of the objects in a
scene: that is the content gap it leaves open, and the point of the comparison with Sim2SG.

How (`fit_attributes`): the renderer is not differentiable, so the gradient of
MMD^2(features(render(transform(graphs, theta))), target features) comes from simultaneous
perturbation (SPSA; Meta-Sim used finite differences through its renderer): per step, one
random +-1 direction d, two renders of the same graphs with the same looks (common random
numbers) at theta +- delta d, g = (L+ - L-) / (2 delta) d, and an Adam step. The features are
the task network's (`image_features`); the kernel is a sum of Gaussians at 0.5, 1 and 2 times
the median distance between target features, fixed per fit. Meta-Sim's second objective, the
task network's accuracy on a small labelled target set (REINFORCE), is left out: the comparison
here uses no target labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F

from sim2sg.scene import graph as sg
from sim2sg.scene.environment import Environment
from sim2sg.scene.relations import derive_relations

PER_CATEGORY = ("shift_x", "shift_y", "log_scale_x", "log_scale_y", "yaw")  # parameters per category
# The search space, as Meta-Sim's generator searches within its grammar's attribute ranges: shifts
# within 2 SDR standard deviations, spreads between half and twice the SDR's, yaw within +-90 deg.
# Unbounded, the fit on clevr -> clevr-target spread the objects it could not multiply ever wider
# (position W1 0.23 -> 1.3 m over three iterations, benchmarks/log/2026-12-07-issue21-fast-gpu.md).
LIMITS = np.array([2.0, 2.0, np.log(2.0), np.log(2.0), 1.0])


@dataclass(frozen=True)
class AttributeParams:
    """Meta-Sim's learnt attribute transform: `values` (len(categories), 5) in `PER_CATEGORY`
    order (shifts in SDR standard deviations, log scales, yaw in units of 90 deg)."""

    categories: tuple[str, ...]
    values: np.ndarray

    @staticmethod
    def identity(categories: Sequence[str]) -> "AttributeParams":
        return AttributeParams(tuple(categories), np.zeros((len(categories), len(PER_CATEGORY))))

    def with_vector(self, v: np.ndarray) -> "AttributeParams":
        return AttributeParams(self.categories, np.asarray(v, dtype=np.float64).reshape(self.values.shape))

    def to_dict(self) -> dict:
        return {c: dict(zip(PER_CATEGORY, map(float, row))) for c, row in zip(self.categories, self.values)}

    @staticmethod
    def from_dict(d: dict, categories: Sequence[str]) -> "AttributeParams":
        return AttributeParams(tuple(categories), np.array([[float(d.get(c, {}).get(k, 0.0)) for k in PER_CATEGORY]
                                                            for c in categories]))


@dataclass(frozen=True)
class PositionStats:
    """Per category (C, 2) mean and standard deviation (m) of the SDR objects' x, y positions."""

    categories: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray


def sdr_statistics(graphs: Sequence[nx.MultiDiGraph], categories: Sequence[str]) -> PositionStats:
    """Mean and standard deviation (floored at 1 cm) of each category's ground positions over
    `graphs`; a category absent from them gets mean 0, std 1."""
    mean, std = np.zeros((len(categories), 2)), np.ones((len(categories), 2))
    for k, c in enumerate(categories):
        xy = np.array([a["position"][:2] for g in graphs for _, a in g.nodes(data=True) if a["category"] == c])
        if len(xy):
            mean[k], std[k] = xy.mean(0), np.maximum(xy.std(0), 0.01)
    return PositionStats(tuple(categories), mean, std)


def transform_graph(g: nx.MultiDiGraph, params: AttributeParams, stats: PositionStats,
                    env: Environment) -> nx.MultiDiGraph:
    """A copy of scene graph `g` with positions and yaws transformed by `params` (module
    docstring), relations derived again; same objects (ids, categories, sizes, looks)."""
    index = {c: k for k, c in enumerate(params.categories)}
    out = g.copy()
    sg.clear_relations(out)
    moved = {}
    for oid, a in sg.objects(g):
        k = index[a["category"]]
        t_x, t_y, s_x, s_y, r = params.values[k]
        p = np.asarray(a["position"], dtype=np.float64)
        xy = stats.mean[k] + np.exp([s_x, s_y]) * (p[:2] - stats.mean[k]) + np.array([t_x, t_y]) * stats.std[k]
        moved[oid] = (np.array([xy[0], xy[1], p[2]]), (a["yaw"] + 90.0 * r) % 360.0)
    # an object on another keeps its place on it: it moves as its support does
    for s, p, o in sg.relations(g):
        if p == "on" and s in moved and o in moved:
            delta = moved[o][0] - np.asarray(g.nodes[o]["position"])
            moved[s] = (np.asarray(g.nodes[s]["position"]) + delta, moved[s][1])
    for oid, (pos, yaw) in moved.items():
        out.nodes[oid]["position"] = tuple(float(v) for v in pos)
        out.nodes[oid]["yaw"] = float(yaw)
    for s, p, o in derive_relations(sg.objects(out), out.graph["camera"], env.predicates, env.relation_threshold,
                                    env.on_tolerance, env.require_category):
        sg.add_relation(out, s, p, o)
    return out


@torch.no_grad()
def image_features(model: torch.nn.Module, images: list[torch.Tensor], device, amp: bool = True,
                   grid: int = 2) -> torch.Tensor:
    """The task network's features for MMD: each level of `model.backbone_features` (eval mode,
    training BatchNorm statistics) average-pooled to a `grid` x `grid` layout, concatenated.
    images: (3, H, W) in [0, 1]. Returns (B, levels x channels x grid^2) float32 on the CPU.
    A coarse layout rather than one global mean: global pooling is nearly blind to where objects
    are, which is all Meta-Sim may change."""
    was = model.training
    model.eval()
    try:
        dev = torch.device(device)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            feats = model.backbone_features([im.to(dev) for im in images])
        return torch.cat([F.adaptive_avg_pool2d(f.float(), grid).flatten(1) for f in feats.values()], 1).cpu()
    finally:
        model.train(was)


def kernel_scales(target: torch.Tensor) -> torch.Tensor:
    """Gaussian kernel widths (3,): 0.5, 1 and 2 times the median pairwise distance of `target`
    (N, D) features (1 when they all coincide)."""
    d = torch.cdist(target.double(), target.double())
    med = d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)].median() if len(target) > 1 else d.new_ones(())
    med = med if med > 0 else d.new_ones(())
    return med * torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)


def mmd2(x: torch.Tensor, y: torch.Tensor, scales: torch.Tensor) -> float:
    """Biased estimate of the squared MMD between samples x (N, D) and y (M, D) with the kernel
    sum_s exp(-|a - b|^2 / (2 s^2)) over the widths `scales`."""
    x, y = x.double(), y.double()

    def k(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * s * s)) for s in scales)

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


@dataclass(frozen=True)
class Fit:
    """`fit_attributes`' result: the parameters, and the MMD^2 (mean of the two evaluations) of
    each step."""

    params: AttributeParams
    mmd: tuple[float, ...]


def fit_attributes(params: AttributeParams, graphs: Sequence[nx.MultiDiGraph], stats: PositionStats,
                   env: Environment, target: torch.Tensor,
                   features: Callable[[list[nx.MultiDiGraph], list[int]], torch.Tensor],
                   rng: np.random.Generator, steps: int, batch: int, lr: float = 0.05, delta: float = 0.1) -> Fit:
    """`steps` SPSA steps (module docstring) from `params` on MMD^2 between the features of the
    transformed graphs (B, D) and the `target` features (M, D). features(graphs, look_seeds) ->
    (len(graphs), D): graphs rendered with the looks of those seeds. Per step: `batch` of `graphs`
    drawn from `rng`, one look seed per graph shared by both evaluations, one +-1 direction, and
    one call of `features` for both evaluations (2B graphs: one render batch instead of two);
    Adam (lr, betas 0.9, 0.999) on the estimate, then projected onto the search space `LIMITS`
    (per category, +- each limit in `PER_CATEGORY` order)."""
    scales = kernel_scales(target)
    limit = np.tile(LIMITS, len(params.categories))
    theta = np.clip(params.values.flatten(), -limit, limit)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    trace = []
    for step in range(steps):
        pick = rng.choice(len(graphs), size=min(batch, len(graphs)), replace=False)
        seeds = [int(v) for v in rng.integers(0, 2**63 - 1, size=len(pick))]
        d = rng.choice(np.array([-1.0, 1.0]), size=theta.shape)
        made = [transform_graph(graphs[i], params.with_vector(theta + sign * delta * d), stats, env)
                for sign in (1.0, -1.0) for i in pick]
        f = features(made, seeds + seeds)
        losses = [mmd2(f[:len(pick)], target, scales), mmd2(f[len(pick):], target, scales)]
        g = (losses[0] - losses[1]) / (2 * delta) * d
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        theta = theta - lr * (m / (1 - 0.9 ** (step + 1))) / (np.sqrt(v / (1 - 0.999 ** (step + 1))) + 1e-8)
        theta = np.clip(theta, -limit, limit)
        trace.append(0.5 * (losses[0] + losses[1]))
    return Fit(params.with_vector(theta), tuple(trace))
