"""The synthesis step's renderer hand-off: scene graphs -> labelled samples, in memory.

graph -> random look (environment) -> in-memory USD stage -> SceneData -> batched render on the
model's device -> `Sample`s. Nothing is written except the (fixed, tiny) texture library, unless
`keep_usd` names a folder, in which case each stage is also saved there for viewers.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import networkx as nx
import numpy as np
import torch

from sim2sg.render.pipeline import RenderOptions, render_scenes
from sim2sg.render.sample import Sample
from sim2sg.scene.environment import Environment
from sim2sg.scene.look import apply_target_look, randomize_look
from sim2sg.scene.textures import FAMILIES, VARIANTS, texture_name
from sim2sg.usd.compile import compile_graph, write_textures
from sim2sg.usd.read import load_scene
from sim2sg.usd.stage import TEXTURE_DIR, write_stage


def texture_library(root: Path) -> Path:
    """Write every texture (all families and variants) under root/textures once; returns it."""
    write_textures(root, [texture_name(f, v) for f in FAMILIES if f != "plain" for v in range(VARIANTS)])
    return (root / TEXTURE_DIR).resolve()


def synthesize(graphs: Sequence[nx.MultiDiGraph], names: Sequence[str], env: Environment,
               options: RenderOptions, device, rng: np.random.Generator, texture_dir: Path,
               batch: int = 256, keep_usd: Path | None = None, workers: int | None = None,
               target_looks: Sequence | None = None, seeds: Sequence[int] | None = None,
               pmap=None) -> list[Sample]:
    """Render `graphs` dressed with random looks from `env` (one look per graph from `rng`).

    Graph cameras are resized to the options' size. texture_dir: an absolute folder holding the
    texture library (`texture_library`). keep_usd: also save each stage as keep_usd/<name>.usdc.
    workers: processes that build the scenes (look, USD stage, SceneData: CPU work, ~25 ms a
    scene) while the renderer runs on `device`; None = min(8, CPUs - 1), 0 = in this process.
    Each scene gets its own generator seeded from `rng` up front, so the output does not depend on
    the number of workers. target_looks: per graph, None or a `sim2sg.loop.target_look.TargetLook`
    whose crops (written under texture_dir) replace the sampled textures it lists. seeds: per
    graph, the seed of its look, instead of drawing them from `rng` (which is then not used): two
    calls, or two graphs of one call, with the same seed get the same look (Meta-Sim's common
    random numbers). pmap: a `worker_map` context's map to build the scenes with, instead of
    opening a pool for this call (a caller that synthesizes many small batches starts it once).
    On CUDA the renderer's cached buffers are handed back to the driver afterwards: at batch 256
    they are GiBs that other processes on the GPU (a table's parallel rows) could not otherwise use.
    """
    seeds = rng.integers(0, 2**63 - 1, size=len(graphs)) if seeds is None else list(seeds)
    if len(seeds) != len(graphs):
        raise ValueError(f"synthesize: {len(seeds)} look seeds for {len(graphs)} graphs")
    looks = list(target_looks) if target_looks is not None else [None] * len(graphs)
    jobs = [(g, name, int(sd), tl) for g, name, sd, tl in zip(graphs, names, seeds, looks)]
    args = (env, options.width, options.height, str(texture_dir), str(keep_usd) if keep_usd is not None else None)
    samples: list[Sample] = []
    with contextlib.nullcontext(pmap) if pmap is not None else worker_map(len(jobs), workers) as build:
        for start in range(0, len(jobs), batch):
            chunk = jobs[start:start + batch]
            samples += render_scenes(build(_build_scene, chunk, *args), [j[1] for j in chunk], options, device)
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return samples


@contextlib.contextmanager
def worker_map(n_jobs: int, workers: int | None = None):
    """Context giving `pmap(fn, jobs, *args)` -> [fn(job, *args) for job in jobs], in order, run by
    up to `workers` forked processes (None = min(8, CPUs - 1)) for `n_jobs` jobs in all, or in
    this process when that leaves fewer than 16 jobs a process (a pool costs ~1 s to start).
    Fork: the children run numpy, OpenCV and USD only (never CUDA) and start in milliseconds."""
    if workers is None:
        workers = min(8, (os.cpu_count() or 1) - 1)
    workers = min(workers, max(0, n_jobs // 16))
    if workers == 0:
        yield lambda fn, jobs, *args: [fn(j, *args) for j in jobs]
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield lambda fn, jobs, *args: list(pool.map(fn, jobs, *(itertools.repeat(a) for a in args),
                                                     chunksize=max(1, len(jobs) // (4 * workers))))


def _build_scene(job, env: Environment, width: int, height: int, texture_dir: str, keep_usd: str | None):
    """One graph -> its look -> USD stage -> SceneData (and the .usdc when keep_usd is set)."""
    g, name, seed, target_look = job
    g = g.copy()
    g.graph["camera"] = g.graph["camera"].resized(width, height)
    look = apply_target_look(randomize_look(g, env, np.random.default_rng(seed)), target_look)
    stage, _ = compile_graph(g, env, look, texture_root=texture_dir)
    if keep_usd is not None:
        write_stage(stage, Path(keep_usd) / f"{name}.usdc")  # textures by absolute path
    return load_scene(stage, width, height)
