"""`sim2sg eval` through typer's CliRunner."""

from __future__ import annotations

import json
import sys
import types

import pytest
from sim2sg.cli.app import app
from test_eval_kitti import EASY, kitti_dir, kitti_preds  # noqa: F401 (fixture)
from test_eval_relations import make_labels, pred_image, preds
from typer.testing import CliRunner

A, B = [0, 0, 10, 10], [20, 0, 30, 10]
runner = CliRunner()


@pytest.fixture
def dataset(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "labels.json").write_text(json.dumps(make_labels([([("cube", A), ("sphere", B)], [(0, "left", 1)])])))
    return d


def good_preds():
    return preds(pred_image(0, [("cube", A, 0.9), ("sphere", B, 0.8)], [(0, 1, {"left": 0.7})]))


def test_eval_predictions_writes_metrics(tmp_path, dataset):
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(good_preds()))
    out = tmp_path / "m" / "metrics.json"
    r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(dataset), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "R@20" in r.output and "mean" in r.output and "ceiling" in r.output
    m = json.loads(out.read_text())
    assert m["relations"]["graph_constraint"]["R@20"] == 1.0
    assert m["relations"]["ceiling"]["graph_constraint"]["R@20"] == 1.0
    assert m["detection"]["AP@0.5"]["cylinder"] is None  # NaN-free JSON
    assert m["source"] == str(p)


def test_default_out_is_beside_the_predictions(tmp_path, dataset):
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(good_preds()))
    r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(dataset)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "eval_metrics.json").is_file()


@pytest.mark.parametrize("args", [[], ["--predictions", "p.json", "--checkpoint", "c.pt"]])
def test_exactly_one_source(dataset, args):
    r = runner.invoke(app, ["eval", "--data", str(dataset)] + args)
    assert r.exit_code == 2
    assert "exactly one" in r.output


def test_bad_predictions_file_is_one_line(tmp_path, dataset):
    data = good_preds()
    data["images"][0]["objects"][0]["box"] = [10, 0, 5, 10]
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(data))
    r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(dataset)])
    assert r.exit_code == 2
    assert "images[0].objects[0].box" in r.output and "Traceback" not in r.output


def test_bad_data_dir(tmp_path):
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(good_preds()))
    r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "not found" in r.output


def test_kitti_difficulty_needs_kitti(tmp_path, dataset):
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(good_preds()))
    r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(dataset), "--kitti-difficulty", "easy"])
    assert r.exit_code == 2 and "KITTI" in r.output


def test_kitti(tmp_path, kitti_dir):  # noqa: F811
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(kitti_preds([("Car", EASY, 0.9)])))
    out = tmp_path / "metrics.json"
    r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(kitti_dir),
                            "--kitti-difficulty", "easy", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())
    assert m["kitti_difficulty"] == "easy" and m["detection"]["AP@0.5"]["Car"] == pytest.approx(1.0)
    assert "no ground-truth relations" in r.output


def test_checkpoint_path_calls_predict_dataset(tmp_path, dataset, monkeypatch):
    calls = []

    def predict_dataset(checkpoint, data_dir, device="auto"):
        calls.append((checkpoint, data_dir, device))
        return good_preds()

    monkeypatch.setitem(sys.modules, "sim2sg.train.predict", types.SimpleNamespace(predict_dataset=predict_dataset))
    ckpt = tmp_path / "run" / "ckpt.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    (ckpt.parent / "metrics.json").write_text("the run's own\n")
    r = runner.invoke(app, ["eval", "--checkpoint", str(ckpt), "--data", str(dataset), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert calls == [(ckpt, dataset, "cpu")]
    assert json.loads((ckpt.parent / "eval_metrics.json").read_text())["relations"]["graph_constraint"]["R@20"] == 1.0
    assert (ckpt.parent / "metrics.json").read_text() == "the run's own\n"  # a run's file is never overwritten


def test_missing_checkpoint(tmp_path, dataset):
    r = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "no.pt"), "--data", str(dataset)])
    assert r.exit_code == 2 and "not found" in r.output


def test_train_data_adds_zero_shot_recall(tmp_path, dataset):
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(good_preds()))
    train = tmp_path / "train"
    train.mkdir()
    (train / "labels.json").write_text(json.dumps(make_labels([([("sphere", A), ("cube", B)], [(0, "left", 1)])])))
    r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(dataset), "--train-data", str(train)])
    assert r.exit_code == 0, r.output
    assert "zR@20" in r.output and "unseen" in r.output
    m = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert m["relations"]["graph_constraint"]["zR@20"] == 1.0  # cube-left-sphere was never trained on


def test_out_never_overwrites_an_input_or_a_run_file(tmp_path, dataset):
    """Found by fuzzing: --out was written whatever it named, so a run's checkpoint.pt, the
    dataset's labels.json or the predictions file itself became metrics; a folder was a
    temporary-file error after the scoring."""
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(good_preds()))
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"model")
    for out, message in [(run / "checkpoint.pt", "is not an earlier `sim2sg eval` result"),
                         (dataset / "labels.json", "is an input of this evaluation"),
                         (p, "is an input of this evaluation"), (run, "is a folder")]:
        before = {f: f.read_bytes() for f in (run / "checkpoint.pt", dataset / "labels.json", p)}
        r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(dataset), "--out", str(out)])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
        assert {f: f.read_bytes() for f in before} == before
    # an earlier result is replaced, as before
    out = run / "eval_metrics.json"
    for _ in range(2):
        r = runner.invoke(app, ["eval", "--predictions", str(p), "--data", str(dataset), "--out", str(out)])
        assert r.exit_code == 0, r.output
