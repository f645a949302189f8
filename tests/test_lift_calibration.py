"""The lift threshold calibrated on held-out SDR scenes (`--score-thresh auto`, sim2sg.loop.calibrate)."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sim2sg.cli.app import app
from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.errors import InputError
from sim2sg.loop import calibrate as cal
from sim2sg.loop.config import LoopConfig
from sim2sg.loop.run import run
from sim2sg.render.settings import render_options
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scenes

runner = CliRunner()


def test_the_bisection_finds_the_threshold_whose_count_matches(monkeypatch):
    """A lifted count falling linearly from 20 (t = 0) to 0 (t = 1) per image, 10 true objects:
    the threshold is 0.5, found in 8 lifts of the 37-point grid."""
    calls = []

    def linear(outs, cams, env, t, iou, seed):
        calls.append(t)
        return 20.0 * (1.0 - t)

    monkeypatch.setattr(cal, "lifted_count", linear)
    c = cal.calibrate([{}] * 4, [None] * 4, [10, 8, 12, 10], env=None, min_fit_iou=0.3)
    assert (c.threshold, c.lifted, c.objects, c.scenes) == (0.5, 10.0, 10.0, 4)
    assert len(set(calls)) <= 8 < len(cal.GRID)  # both ends, then log2 of the grid
    # the ends: everything lifted still too few -> the lowest threshold; too many -> the highest
    assert cal.calibrate([{}], [None], [30], None, 0.3).threshold == cal.GRID[0]
    assert cal.calibrate([{}], [None], [0], None, 0.3).threshold == cal.GRID[-1]
    with pytest.raises(ValueError, match="one camera and count per output"):
        cal.calibrate([{}], [None, None], [1], None, 0.3)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    env = load_env("clevr")
    graphs = list(sample_scenes(env, seed=3, count=6))
    samples = synthesize(graphs, [f"{i}" for i in range(6)], env, render_options(env, 96, 96), "cpu",
                         np.random.default_rng(0), texture_library(tmp_path_factory.mktemp("tex")))
    return env, samples, [cal.object_count(g, env) for g in graphs]


def _outputs(samples, low: float, high: float):
    """A detector that finds every visible object, alternately at score `high` and `low`."""
    outs = []
    for s in samples:
        n = len(s.objects)
        outs.append({"boxes": torch.tensor([o.box for o in s.objects], dtype=torch.float32).reshape(-1, 4),
                     "labels": torch.tensor([o.category_id for o in s.objects]),
                     "scores": torch.tensor([high if i % 2 == 0 else low for i in range(n)])})
    return outs


def test_calibration_through_the_real_lift_keeps_the_detections_the_count_needs(scenes):
    """The true boxes, half of them scored 0.3 and half 0.9. Against the scenes' own counts,
    dropping the 0.3 half undercounts, so the threshold keeps it (<= 0.3) and the lift makes
    about as many objects as there are; against counts halved, it drops that half (> 0.3)."""
    env, samples, counts = scenes
    outs, cams = _outputs(samples, 0.3, 0.9), [s.camera for s in samples]
    visible = np.mean([len(s.objects) for s in samples])
    c = cal.calibrate(outs, cams, counts, env, min_fit_iou=0.3)
    assert c.threshold <= 0.3 and c.objects == pytest.approx(np.mean(counts))
    assert 0.8 * visible <= c.lifted <= visible  # the lift keeps (nearly) every true box
    half = cal.calibrate(outs, cams, [n // 2 for n in counts], env, min_fit_iou=0.3)
    assert 0.3 < half.threshold <= 0.9 and half.lifted < c.lifted


def test_loop_with_auto_threshold_records_its_calibration(render_target, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(cal, "SCENES", 6)
    root, _ = render_target(3, 64)
    lines = []
    cfg = LoopConfig(env="clevr", target=str(root / "images"), out=str(tmp_path / "run"), align="label",
                     iterations=2, sdr_scenes=4, width=64, height=64, sdr_steps=2, iter_steps=1, batch_size=2,
                     lr_warmup_steps=1, arch="fast", backbone="resnet10-half", score_threshold="auto",
                     progress=False, model={"box_score_thresh": 0.0})
    h = run(cfg, log=lines.append)
    for p in h["phases"][1:]:
        c = p["lift_calibration"]
        assert p["lift_threshold"] == c["threshold"] in cal.GRID and c["scenes"] == 6 and c["objects"] > 0
    assert sum("calibrated on 6 held-out SDR scenes" in m for m in lines) == 2
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved["config"]["score_threshold"] == "auto" and saved["phases"][2]["lift_threshold"] in cal.GRID


@pytest.mark.parametrize("value", ["nope", "1.5", "-0.1"])
def test_a_bad_threshold_is_one_clear_error(render_target, tmp_path, value):
    root, _ = render_target(1, 32)
    r = runner.invoke(app, ["loop", "--env", "clevr", "--target", str(root / "images"), "--out", str(tmp_path / "o"),
                            "--score-thresh", value, "--device", "cpu"])
    assert r.exit_code == 2 and "--score-thresh" in r.output and "'auto'" in r.output, r.output
    assert "Traceback" not in r.output
    with pytest.raises(InputError, match="score_threshold"):
        LoopConfig(env="clevr", target="t", out="o", score_threshold="sometimes").validate()
