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


# ---- predict: a second run into the same --out, a killed run ----------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A freshly initialised fast-network checkpoint of the toy vocabulary at 64x64."""
    from sim2sg.model import ModelConfig
    from sim2sg.train.checkpoint import save_checkpoint
    from sim2sg.train.config import TrainConfig
    from sim2sg.train.steps import new_state
    from sim2sg.train.toydata import CATEGORIES, PREDICATES

    root = tmp_path_factory.mktemp("ckpt")
    cfg = TrainConfig(source=str(root), out=str(root), device="cpu", arch="fast", backbone="resnet10-half")
    state = new_state(cfg, ModelConfig(arch="fast", backbone="resnet10-half", num_classes=len(CATEGORIES),
                                       num_predicates=len(PREDICATES), image_size=(64, 64)))
    save_checkpoint(root / "checkpoint.pt", state, cfg, {"categories": list(CATEGORIES),
                                                         "predicates": list(PREDICATES), "env": "toy"})
    return root / "checkpoint.pt"


def images_of(folder: Path, *names: str) -> Path:
    import cv2

    folder.mkdir()
    for k, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full((32, 32, 3), 40 * k + 20, np.uint8))
    return folder


def predict_cli(images: Path, checkpoint: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["predict", str(images), "--checkpoint", str(checkpoint), "--out", str(out),
                                    "--device", "cpu", *extra])


def test_predict_into_a_folder_of_another_run_is_refused_unless_overwrite(checkpoint, tmp_path):
    """Found by sweep 6: a second predict into the same --out left the first run's a.json, a.png
    beside a predictions.json that does not list them."""
    first, second = images_of(tmp_path / "first", "a.png", "b.png"), images_of(tmp_path / "second", "b.png", "c.png")
    out = tmp_path / "out"
    assert predict_cli(first, checkpoint, out).exit_code == 0
    (out / "notes.txt").write_text("mine\n")
    before = tree(out)
    r = predict_cli(second, checkpoint, out)
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        f"error: {out / 'predictions.json'}: holds another run's predictions (1 image(s) not in {second}, "
        "e.g. a.json): predict into a new folder, or pass --overwrite to replace them"]
    assert tree(out) == before
    assert predict_cli(first, checkpoint, out).exit_code == 0  # the same images: replaced in place
    assert tree(out) == before
    r = predict_cli(second, checkpoint, out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(tree(out)) == ["b.json", "b.png", "c.json", "c.png", "notes.txt", "predictions.json"]
    (out / "predictions.json").write_text("{}\n")  # not a predict output: its files are unknown
    r = predict_cli(second, checkpoint, out, "--overwrite")
    assert r.exit_code == 2 and "is not the output of an earlier `sim2sg predict`" in r.output


def test_a_killed_predict_leaves_no_predictions_file_of_the_run_before(checkpoint, tmp_path, monkeypatch):
    """Found by sweep 6: predict killed after its first graph kept the previous run's
    predictions.json beside the new graphs (and a re-run with other images then mixed them)."""
    from sim2sg.train import predict as pr

    images, other = images_of(tmp_path / "images", "a.png", "b.png"), images_of(tmp_path / "other", "c.png")
    out = tmp_path / "out"
    pr.predict_images(checkpoint, images, out, device="cpu", batch_size=1)
    unbroken = tree(out)
    real = pr.draw_graph

    def dying(*args, **kw):
        if (out / "a.json").is_file():  # once the new a.json is written, before its drawing
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(pr, "draw_graph", dying)
    with pytest.raises(KeyboardInterrupt):
        pr.predict_images(checkpoint, images, out, device="cpu", batch_size=1)
    monkeypatch.setattr(pr, "draw_graph", real)
    assert sorted(tree(out)) == ["a.json", "predictions.partial.json"]
    with pytest.raises(InputError, match="holds another run's predictions"):  # the killed run's a.json
        pr.predict_images(checkpoint, other, out, device="cpu")
    pr.predict_images(checkpoint, images, out, device="cpu", batch_size=1)
    assert tree(out) == unbroken


# ---- demo: the report of the run before --------------------------------------------------------------
def old_report(report: Path) -> dict[str, str]:
    from sim2sg.experiments.page import REPORT_FILES

    report.mkdir(parents=True)
    for name in (*REPORT_FILES, "notes.txt"):
        (report / name).write_text(f"the run before: {name}\n")
    return tree(report)


def test_a_report_killed_midway_leaves_no_page_of_the_run_before(tmp_path, monkeypatch):
    """Found by sweep 6: a demo killed while writing its report (after table.md, results.json)
    left the previous run's index.html and figure.png beside the new table."""
    from sim2sg.experiments import page
    from sim2sg.experiments.tables import Domain

    report = tmp_path / "report"
    old_report(report)

    def dying_curves(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(page, "curves", dying_curves)
    domain = Domain(tmp_path / "d", tmp_path / "d" / "images", tmp_path / "d", tmp_path / "d" / "graphs", tmp_path / "e")
    with pytest.raises(KeyboardInterrupt):
        page.write_report(report, {"SDR": {"phases": [], "final": {}}}, domain, tmp_path / "runs", "micro")
    assert sorted(tree(report)) == ["notes.txt", "results.json", "table.md"]  # the new ones, no page
    assert "the run before" not in (report / "table.md").read_text()


def test_a_demo_rerun_killed_before_its_report_leaves_no_report_of_the_run_before(tmp_path, monkeypatch):
    """Found by sweep 6: a demo re-run killed while it rendered or trained kept the earlier run's
    report (index.html, table, figures) beside the runs it was replacing."""
    from sim2sg.experiments import demo

    old_report(tmp_path / "report")

    def dying_domain(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "make_domain", dying_domain)
    micro = dataclasses.replace(demo.PRESETS["small"], size=32, n_target=4, n_eval=3, n_source=4, iterations=2,
                                sdr_steps=2, iter_steps=1, batch=2)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path, device="cpu", preset=micro, log=lambda _: None)
    assert sorted(tree(tmp_path / "report")) == ["notes.txt"]
