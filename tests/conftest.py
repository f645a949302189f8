"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: tiny tensors on a shared 2-core machine only fight over
    the cores with more (measured 10x slower with 2 threads under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def render_target(tmp_path_factory):
    """`render_target(count, size, seed=5)` -> (root, samples): `count` clevr-target scenes rendered
    in memory at size x size into a fresh folder root, with root/images/NAME.png (unlabelled
    target images) and root/graphs/NAME.json (their true visible graphs, with boxes, as `sim2sg
    render` writes them)."""
    import cv2
    import numpy as np

    from sim2sg.dataset.synthesize import synthesize, texture_library
    from sim2sg.dataset.writers import visible_graph
    from sim2sg.render.settings import render_options
    from sim2sg.scene import graph as sg
    from sim2sg.scene.environment import load_env
    from sim2sg.scene.sdr import sample_scenes

    def render(count: int, size: int, seed: int = 5):
        root = tmp_path_factory.mktemp("target")
        env = load_env("clevr-target")
        graphs = list(sample_scenes(env, seed=seed, count=count))
        samples = synthesize(graphs, [f"{i:06d}" for i in range(count)], env, render_options(env, size, size), "cpu",
                             np.random.default_rng(0), texture_library(root))
        (root / "images").mkdir()
        for s in samples:
            cv2.imwrite(str(root / "images" / f"{s.name}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
            sg.write_graph(root / "graphs" / f"{s.name}.json", visible_graph(s))
        return root, samples

    return render
