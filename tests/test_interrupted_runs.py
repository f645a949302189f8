"""Interrupted runs and output folders that already hold something: a kill, a re-run, a resume or a
second run into the same --out leaves no stale or half-replaced outputs, and a resume ends with the
bytes of an unbroken run (the fifth sweep)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sim2sg.cli.app import app
from sim2sg.dataset import render_job
from sim2sg.dataset.toy import three_object_sample
from sim2sg.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_WRITERS = ("coco", "sg", "kitti", "clevr", "yolo", "vg")


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- render ------------------------------------------------------------------------------------
class SeededFake:
    """A renderer whose pixels depend on the post-processing seed (as the real one's do); raises
    KeyboardInterrupt, as Ctrl-C would, when asked for its `die_at`-th batch (1-based)."""

    def __init__(self, die_at: int = 0):
        self.batches, self.die_at = 0, die_at

    def __call__(self, paths, options, device):
        self.batches += 1
        if self.batches == self.die_at:
            raise KeyboardInterrupt
        out = []
        for p in paths:
            s = three_object_sample(Path(p).stem)
            out.append(dataclasses.replace(s, image=((s.image.astype(int) + 40 * options.seed) % 256).astype(np.uint8)))
        return out


def _render(stages, out, writers, seed, fake):
    job = render_job.RenderJob(out_dir=out, width=64, height=48, writers=writers, batch=1, seed=seed)
    return render_job.run(stages, job, render_fn=fake, env_of_stage=lambda p: None, progress=False)


@pytest.fixture
def stages(tmp_path):
    root = tmp_path / "stages"
    root.mkdir()
    for i in range(3):
        (root / f"s{i}.usda").write_text(f"#usda 1.0\n# stage {i}\n")
    return render_job.discover_stages(root)


def test_rerender_with_other_settings_and_fewer_writers_leaves_no_stale_outputs(stages, tmp_path):
    """Found by sweep 5: `render --writers kitti,yolo,vg,clevr`, then `render` of the same stages with
    another --seed (or --size) and the default writers re-rendered images/ but left kitti/, yolo/,
    clevr/ and vg/scene_graphs.json of the first run beside them, describing the images replaced."""
    out, ref = tmp_path / "out", tmp_path / "ref"
    _render(stages, out, ALL_WRITERS, 1, SeededFake())
    _render(stages, out, ("coco", "sg"), 2, SeededFake())
    _render(stages, ref, ALL_WRITERS, 2, SeededFake())
    assert tree(out) == tree(ref)


def test_interrupted_rerender_leaves_no_labels_listing_changed_images(stages, tmp_path):
    """Found by sweep 5: a re-render with another --seed/--size killed midway kept the old labels.json
    (valid, so `train` and `eval` took it) listing the new images with the old boxes and sizes."""
    out, ref = tmp_path / "out", tmp_path / "ref"
    _render(stages, out, ALL_WRITERS, 1, SeededFake())
    with pytest.raises(KeyboardInterrupt):
        _render(stages, out, ALL_WRITERS, 2, SeededFake(die_at=2))
    assert not (out / "labels.json").exists()
    assert not (out / "vg/scene_graphs.json").exists() and not (out / "clevr/CLEVR_scenes.json").exists()
    _render(stages, out, ALL_WRITERS, 2, SeededFake())
    _render(stages, ref, ALL_WRITERS, 2, SeededFake())
    assert tree(out) == tree(ref)


# ---- graph2usd ---------------------------------------------------------------------------------
def test_graph2usd_refuses_to_put_both_formats_of_a_stage_side_by_side(tmp_path):
    """Found by sweep 5: graph2usd --format usda into a folder of usdc stages wrote 000000.usda beside
    000000.usdc, and `render` of the folder then rendered every scene twice."""
    r = CliRunner()
    assert r.invoke(app, ["sample", "--count", "1", "--out", str(tmp_path)]).exit_code == 0
    usd = tmp_path / "usd"
    assert r.invoke(app, ["graph2usd", str(tmp_path / "graphs"), "--out", str(usd)]).exit_code == 0
    before = tree(usd)
    res = r.invoke(app, ["graph2usd", str(tmp_path / "graphs"), "--out", str(usd), "--format", "usda"])
    assert res.exit_code == 2 and f"error: {usd / '000000.usdc'}: a stage of graph" in res.output, res.output
    assert "Traceback" not in res.output and tree(usd) == before


# ---- train and loop into a folder holding a run ---------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from sim2sg.train.toydata import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "src", 4, np.random.default_rng(0), size=(64, 64))


def test_train_refuses_an_out_holding_a_run(toy, tmp_path):
    """Found by sweep 5: `train --out RUN` (no --resume) into a finished run replaced its checkpoint
    and config.json and kept its val_metrics.json / val_predictions.json and tb/ events beside the
    new run's."""
    run = tmp_path / "run"
    run.mkdir()
    for name, text in (("checkpoint.pt", "run 1"), ("val_metrics.json", "{}\n")):
        (run / name).write_text(text)
    before = tree(run)
    res = CliRunner().invoke(app, ["train", "--source", str(toy), "--out", str(run), "--steps", "1", "--batch", "2",
                                   "--device", "cpu", "--no-progress", "--model", "fast", "--backbone", "resnet10-half"])
    assert res.exit_code == 2, res.output
    assert f"error: {run / 'checkpoint.pt'}: this folder holds a training run already: pass --resume" in res.output
    assert tree(run) == before


def test_loop_refuses_an_out_holding_a_run(tmp_path):
    """Found by sweep 5: `loop --out RUN --loop 0` (no --resume) into a run of one iteration replaced
    its checkpoint and history and left that iteration's graphs/iter1.jsonl.gz and examples/iter1_*
    beside the new run's."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text('{"phases": []}\n')
    res = CliRunner().invoke(app, ["loop", "--env", "clevr", "--target", str(tmp_path / "images"),
                                   "--out", str(run), "--device", "cpu"])
    assert res.exit_code == 2, res.output
    assert f"error: {run / 'history.json'}: this folder holds a loop run already: pass --resume" in res.output


# ---- a resumed training run ends with the unbroken run's bytes -------------------------------------
def test_resumed_training_writes_the_unbroken_checkpoint_bytes(toy, tmp_path, monkeypatch):
    """Found by sweep 5: after a kill, `train --resume` ended with a checkpoint.pt equal to the
    unbroken run's in every tensor and value but not in bytes: pickle shared the interned optimizer
    keys ("step", ...) of a fresh run, not those read back from the file."""
    from sim2sg.train import steps as engine
    from sim2sg.train.config import TrainConfig
    from sim2sg.train.fit import fit

    run = tmp_path / "run"
    cfg = TrainConfig(source=str(toy), out=str(run), arch="fast", backbone="resnet10-half", steps=3, batch_size=2,
                      checkpoint_every=1, tensorboard=False, progress=False, device="cpu")
    fit(cfg)
    unbroken = tree(run)
    run.rename(tmp_path / "unbroken")

    real, calls = engine.train_step, {"n": 0}

    def dying_step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # after the checkpoint of step 2
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(engine, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    monkeypatch.setattr(engine, "train_step", real)
    with pytest.raises(InputError, match="holds a training run already"):
        fit(cfg)  # not without --resume
    fit(cfg, resume=True)
    assert tree(run) == unbroken
