"""The synthesis step's renderer hand-off: scene graphs -> labelled samples, in memory.

graph -> random look (environment) -> in-memory USD stage -> SceneData -> batched render on the
model's device -> `Sample`s. Nothing is written except the (fixed, tiny) texture library, unless
`keep_usd` names a folder, in which case each stage is also saved there for viewers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import numpy as np

from .env import Environment
from .render.pipeline import RenderOptions, render_scenes
from .render.post import PostProcess
from .render.sample import Sample
from .textures import FAMILIES, VARIANTS, texture_name
from .usd.compile import compile_graph, write_textures
from .usd.read import load_scene
from .usd.stage import TEXTURE_DIR, write_stage


def render_options(env: Environment, width: int, height: int, seed: int = 0, ssaa: int = 1,
                   shadows: bool = True) -> RenderOptions:
    """RenderOptions from an environment's [render] and [appearance.post] tables at a size."""
    scale = (width * height) / (env.camera.width * env.camera.height)
    post = env.raw.get("appearance", {}).get("post")
    return RenderOptions(
        width=width, height=height, ssaa=ssaa, shadows=shadows,
        # The visibility threshold is given at the environment's nominal size: scale it by area.
        min_visible_pixels=max(1, int(round(env.min_visible_pixels * scale))),
        post=PostProcess.from_dict(post) if post else None, seed=seed,
    )


def texture_library(root: Path) -> Path:
    """Write every texture (all families and variants) under root/textures once; returns it."""
    write_textures(root, [texture_name(f, v) for f in FAMILIES if f != "plain" for v in range(VARIANTS)])
    return (root / TEXTURE_DIR).resolve()


def synthesize(graphs: Sequence[nx.MultiDiGraph], names: Sequence[str], env: Environment,
               options: RenderOptions, device, rng: np.random.Generator, texture_dir: Path,
               batch: int = 256, keep_usd: Path | None = None) -> list[Sample]:
    """Render `graphs` dressed with random looks from `env` (one look per graph from `rng`).

    Graph cameras are resized to the options' size. texture_dir: an absolute folder holding the
    texture library (`texture_library`). keep_usd: also save each stage as keep_usd/<name>.usdc.
    """
    samples: list[Sample] = []
    for start in range(0, len(graphs), batch):
        scenes = []
        for g, name in zip(graphs[start:start + batch], names[start:start + batch]):
            g = g.copy()
            g.graph["camera"] = g.graph["camera"].resized(options.width, options.height)
            stage, _ = compile_graph(g, env, rng, texture_root=str(texture_dir))
            if keep_usd is not None:
                write_stage(stage, keep_usd / f"{name}.usdc")  # textures by absolute path
            scenes.append(load_scene(stage))
        samples += render_scenes(scenes, list(names[start:start + batch]), options, device)
    return samples
