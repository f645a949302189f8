"""Meta-Sim (`sim2sg.loop.metasim`) and the three baseline rows of the loop, tiny and on the CPU."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from sim2sg.errors import InputError
from sim2sg.loop.config import LoopConfig
from sim2sg.loop.metasim import (
    LIMITS,
    AttributeParams,
    fit_attributes,
    kernel_scales,
    mmd2,
    sdr_statistics,
    transform_graph,
)
from sim2sg.loop.run import run
from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scenes

pytestmark = pytest.mark.usefixtures("one_thread")


def _content(g):
    return sorted((oid, a["category"], a["size"]) for oid, a in sg.objects(g))


def test_transform_moves_positions_and_yaws_but_keeps_every_object():
    env = load_env("clevr")
    graphs = list(sample_scenes(env, seed=3, count=20))
    stats = sdr_statistics(graphs, env.categories)
    p = AttributeParams.identity(env.categories)
    assert all(sg.objects(transform_graph(g, p, stats, env)) == sg.objects(g) for g in graphs[:3])
    v = p.values.copy()
    v[:, 0] = 1.0  # one SDR standard deviation along x, every category
    v[:, 4] = 1.0  # +90 deg
    for g in graphs:
        t = transform_graph(g, p.with_vector(v), stats, env)
        assert _content(t) == _content(g)  # same ids, classes, sizes: Meta-Sim cannot change them
        for (_, a), (_, b) in zip(sg.objects(g), sg.objects(t)):
            k = env.categories.index(a["category"])
            assert b["position"][0] == pytest.approx(a["position"][0] + stats.std[k, 0])
            assert b["position"][1:] == pytest.approx(a["position"][1:])
            assert b["yaw"] == pytest.approx((a["yaw"] + 90.0) % 360.0)
    # relations follow the new geometry: scaling x by -1 about the mean swaps left and right
    v = np.zeros_like(p.values)
    g = next(g for g in graphs if any(r == "left" for _, r, _ in sg.relations(g)))
    v[:, 2] = np.log(1e-3)  # all objects of a class collapse onto its mean x: few left/right left
    t = transform_graph(g, p.with_vector(v), stats, env)
    assert Counter(r for _, r, _ in sg.relations(t)) != Counter(r for _, r, _ in sg.relations(g))


def test_mmd_is_zero_for_one_sample_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=gen)
    s = kernel_scales(x)
    assert mmd2(x, x, s) == pytest.approx(0.0, abs=1e-12)
    assert 0 < mmd2(x + 0.5, x, s) < mmd2(x + 2.0, x, s)


def _mean_position(gs, seed):
    """Features that see where objects are: per scene, the mean x and y of its objects (B, 2)."""
    return torch.from_numpy(np.array([np.mean([a["position"][:2] for _, a in sg.objects(g)], 0) for g in gs]))


def _shifted_target(x_shift: float, count: int):
    """(env, SDR graphs, their statistics, the features of other SDR scenes with every object
    `x_shift` standard deviations further along +x)."""
    env = load_env("clevr")
    graphs = list(sample_scenes(env, seed=1, count=count))
    stats = sdr_statistics(graphs, env.categories)
    truth = AttributeParams.identity(env.categories)
    v = truth.values.copy()
    v[:, 0] = x_shift
    target = [transform_graph(g, truth.with_vector(v), stats, env) for g in sample_scenes(env, seed=2, count=count)]
    return env, graphs, stats, _mean_position(target, 0)


def test_spsa_moves_the_placements_towards_a_shifted_target():
    """Target scenes: other SDR scenes with every object 1.5 standard deviations further along +x.
    With features that see where objects are (per scene: mean x and y of its objects), the fit
    moves every category's x shift towards +1.5 and lowers the MMD, and the y shift stays small."""
    env, graphs, stats, target = _shifted_target(1.5, 48)
    fit = fit_attributes(AttributeParams.identity(env.categories), graphs, stats, env, target,
                         _mean_position, np.random.default_rng(0), steps=60, batch=16, lr=0.1, delta=0.2)
    assert fit.params.values[:, 0].mean() > 0.75
    assert abs(fit.params.values[:, 1].mean()) < 0.5
    assert np.mean(fit.mmd[-10:]) < 0.5 * np.mean(fit.mmd[:5])
    again = fit_attributes(AttributeParams.identity(env.categories), graphs, stats, env, target,
                           _mean_position, np.random.default_rng(0), steps=60, batch=16, lr=0.1, delta=0.2)
    assert np.array_equal(again.params.values, fit.params.values)  # same generator, same fit
    assert AttributeParams.from_dict(fit.params.to_dict(), env.categories).values == pytest.approx(fit.params.values)


def test_spsa_stays_in_the_search_space():
    """A target 3 standard deviations away (beyond the 2-sigma limit) pulls the x shifts up to the
    limit and no further; a start outside the space is projected into it first."""
    env, graphs, stats, target = _shifted_target(3.0, 32)
    start = AttributeParams.identity(env.categories).values.copy()
    start[:, 2] = 5.0  # log scale x far outside +- ln 2
    fit = fit_attributes(AttributeParams.identity(env.categories).with_vector(start), graphs, stats, env, target,
                         _mean_position, np.random.default_rng(0), steps=80, batch=16, lr=0.2, delta=0.2)
    assert np.all(np.abs(fit.params.values) <= LIMITS + 1e-12)
    assert fit.params.values[:, 0].max() == pytest.approx(LIMITS[0]) and fit.params.values[:, 0].mean() > 1.0


def test_metasim_and_baseline_configs_are_checked():
    with pytest.raises(InputError):
        LoopConfig(env="clevr", target="t", out="o", method="metasim", align="label").validate()
    with pytest.raises(InputError):
        LoopConfig(env="clevr", target="t", out="o", align="gpa", arch="fast").validate()
    LoopConfig(env="clevr", target="t", out="o", method="metasim", align="none").validate()
    assert LoopConfig(env="clevr", target="t", out="o", align="sapnet").model_align() == "sapnet"


@pytest.fixture(scope="module")
def target(render_target):
    return render_target(4, 64)[0]


# GPA's training step is tested in test_baselines_align.py; one GRL baseline runs the loop here.
@pytest.mark.parametrize("method,align,phase", [
    ("metasim", "none", "iteration 1"),
    ("sim2sg", "sapnet", "sdr (aligned)"),
])
def test_baseline_rows_run_end_to_end(target, tmp_path, method, align, phase):
    cfg = LoopConfig(env="clevr", target=str(target / "images"), out=str(tmp_path / "run"), method=method, align=align,
                     iterations=1, sdr_scenes=4, width=64, height=64, sdr_steps=2, iter_steps=2, batch_size=2,
                     lr_warmup_steps=1, target_graphs=str(target / "graphs"), progress=False,
                     metasim_steps=2, metasim_batch=2, metasim_images=4)
    h = run(cfg, log=lambda m: None)
    assert [p["name"] for p in h["phases"]] == ["sdr", phase]
    last = h["phases"][1]
    assert last["step"] == 4  # the same optimizer steps as every row
    if method == "metasim":
        ms = last["metasim"]
        assert set(ms["params"]) == set(load_env("clevr").categories) and ms["mmd_first"] >= 0
        gap = last["content_gap"]
        sdr_gap = h["sdr_content_gap"]
        assert gap["count_tv"] == pytest.approx(sdr_gap["count_tv"])  # counts and classes stay the SDR ones
    else:
        ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        assert tuple(ckpt["model_config"]["align_heads"]) == (align,)
    assert json.loads((tmp_path / "run" / "history.json").read_text())["phases"][1]["name"] == phase


def test_look_seeds_give_common_random_numbers_in_one_render_batch(tmp_path):
    """Meta-Sim's two evaluations of a step go through one `synthesize` call: a graph given twice
    with the same look seed renders the same pixels; another seed, another look; a persistent
    pool (pmap) gives the bytes a per-call one does; a seed list of the wrong length is refused."""
    from sim2sg.dataset.synthesize import synthesize, texture_library, worker_map
    from sim2sg.render.settings import render_options

    env = load_env("clevr")
    g = next(iter(sample_scenes(env, seed=4, count=1)))
    opts, tex = render_options(env, 64, 64), texture_library(tmp_path)
    a, b, c = synthesize([g, g, g], ["a", "b", "c"], env, opts, "cpu", None, tex, workers=0, seeds=[7, 7, 8])
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    with worker_map(32, workers=1) as pmap:
        pooled = synthesize([g, g, g], ["a", "b", "c"], env, opts, "cpu", None, tex, seeds=[7, 7, 8], pmap=pmap)
    assert all(np.array_equal(p.image, q.image) for p, q in zip(pooled, (a, b, c)))
    with pytest.raises(ValueError, match="2 look seeds for 3 graphs"):
        synthesize([g, g, g], ["a", "b", "c"], env, opts, "cpu", None, tex, workers=0, seeds=[7, 7])
