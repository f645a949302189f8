"""`sim2sg train` / `sim2sg predict` through the CLI: bad inputs give one `error:` line and exit
status 2; predict writes valid scene-graph JSON files, drawings and a predictions file."""

import json

import numpy as np
import pytest
import torch
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.errors import InputError
from sim2sg.model import ModelConfig, build_model
from sim2sg.scene.graph import read_graph
from sim2sg.train.checkpoint import save_checkpoint
from sim2sg.train.config import TrainConfig
from sim2sg.train.predict import predict_dataset
from sim2sg.train.steps import new_state
from sim2sg.train.toydata import (
    CATEGORIES,
    PREDICATES,
    write_image_folder,
    write_toy_dataset,
)

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    src = write_toy_dataset(root / "src", 3, rng, size=(64, 64))
    tgt = write_image_folder(root / "tgt", 2, rng, size=(64, 64))
    cfg = TrainConfig(source=str(src), out=str(root / "run"), device="cpu")
    state = new_state(cfg, ModelConfig(num_classes=len(CATEGORIES), num_predicates=len(PREDICATES), image_size=(64, 64)))
    ckpt = root / "run" / "checkpoint.pt"
    meta = {"categories": list(CATEGORIES), "predicates": list(PREDICATES), "env": "toy", "image_size": [64, 64]}
    save_checkpoint(ckpt, state, cfg, meta)
    return root, src, tgt, ckpt


def _one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for w in words:
        assert w in lines[0]


def test_train_missing_labels(setup, tmp_path):
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["train", "--source", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--steps", "1"])
    _one_line_error(r, "labels.json")


def test_train_empty_target_folder(setup, tmp_path):
    _, src, _, _ = setup
    (tmp_path / "none").mkdir()
    r = runner.invoke(app, ["train", "--source", str(src), "--target", str(tmp_path / "none"), "--align", "both",
                            "--out", str(tmp_path / "o"), "--steps", "1", "--device", "cpu"])
    _one_line_error(r, "no images")


def test_train_align_without_target(setup, tmp_path):
    _, src, _, _ = setup
    r = runner.invoke(app, ["train", "--source", str(src), "--align", "appearance", "--out", str(tmp_path / "o")])
    _one_line_error(r, "--target")


def test_resume_without_checkpoint(setup, tmp_path):
    _, src, _, _ = setup
    r = runner.invoke(app, ["train", "--source", str(src), "--out", str(tmp_path / "o"), "--resume", "--device", "cpu"])
    _one_line_error(r, "nothing to resume")


@pytest.mark.parametrize("content", [b"", b"{\"not\": \"a checkpoint\"}", b"PK\x03\x04garbage"])
def test_predict_bad_checkpoint(setup, tmp_path, content):
    _, _, tgt, _ = setup
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    r = runner.invoke(app, ["predict", str(tgt), "--checkpoint", str(bad), "--out", str(tmp_path / "p"), "--device", "cpu"])
    _one_line_error(r, "bad.pt")


def test_predict_foreign_torch_file(setup, tmp_path):
    _, _, tgt, _ = setup
    bad = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    r = runner.invoke(app, ["predict", str(tgt), "--checkpoint", str(bad), "--out", str(tmp_path / "p"), "--device", "cpu"])
    _one_line_error(r, "not a sim2sg checkpoint")


def test_predict_empty_image_folder(setup, tmp_path):
    _, _, _, ckpt = setup
    (tmp_path / "none").mkdir()
    r = runner.invoke(app, ["predict", str(tmp_path / "none"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p"), "--device", "cpu"])
    _one_line_error(r, "no images")


def test_predict_writes_valid_graphs(setup, tmp_path):
    _, _, tgt, ckpt = setup
    out = tmp_path / "pred"
    # thresholds 0 so an untrained model still yields objects and relations to check
    r = runner.invoke(app, ["predict", str(tgt), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu",
                            "--score-thresh", "0", "--rel-thresh", "0"])
    assert r.exit_code == 0, r.output
    graphs = sorted(out.glob("*.json"))
    assert [p.name for p in graphs] == ["000000.json", "000001.json", "predictions.json"]
    for p in graphs[:2]:
        g = read_graph(p, categories=CATEGORIES, predicates=PREDICATES)
        assert g.number_of_nodes() > 0
        for _, a in g.nodes(data=True):
            assert a["attributes"] == {"lifted": False} and a["box"] is not None and 0 <= a["score"] <= 1
        assert (out / f"{p.stem}.png").is_file()
    preds = json.loads((out / "predictions.json").read_text())
    assert preds["predicate_names"] == ["__background__", *PREDICATES]


def test_predict_dataset_matches_the_predictions_format(setup):
    _, src, _, ckpt = setup
    d = predict_dataset(ckpt, src, device="cpu")
    assert d["format"] == "sim2sg-predictions" and len(d["images"]) == 3
    im = d["images"][0]
    assert im["image_id"] == 0 and im["file_name"] == "images/000000.png"
    for rel in im["relations"]:
        assert len(rel["scores"]) == len(PREDICATES) + 1
        assert rel["subject"] != rel["object"] and max(rel["subject"], rel["object"]) < len(im["objects"])
    try:
        from sim2sg.eval import evaluate, load_ground_truth
    except ImportError:
        return
    metrics = evaluate(load_ground_truth(src), d)  # the eval package accepts what we write
    assert "detection" in metrics


def test_load_weights_accepts_a_torchvision_resnet_state_dict(tmp_path):
    import torchvision

    from sim2sg.train.checkpoint import load_weights

    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    model = build_model(ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64)))
    n = load_weights(model, tmp_path / "r18.pth").count
    assert n == len([k for k in resnet.state_dict() if not k.startswith("fc.")])
    assert torch.equal(model.detector.backbone.body.conv1.weight, resnet.conv1.weight)
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="no tensor matches"):
        load_weights(model, tmp_path / "other.pth")


def test_weights_of_other_class_names_keep_the_class_heads_at_their_initialisation(setup, tmp_path):
    """Found by fuzzing: `train --weights` of a dining checkpoint (3 classes, as clevr) loaded its
    class heads into clevr's, class i learning from the checkpoint's class i."""
    from sim2sg.train.checkpoint import load_checkpoint, load_weights, vocabulary_tensors

    _, src, _, ckpt_path = setup
    ckpt = load_checkpoint(ckpt_path)
    ours = (list(CATEGORIES), list(PREDICATES))
    cfg = ModelConfig(num_classes=len(CATEGORIES), num_predicates=len(PREDICATES), image_size=(64, 64))
    heads = vocabulary_tensors(cfg)
    assert "detector.roi_heads.box_predictor.cls_score.weight" in heads and "relation.classifier.weight" in heads
    assert not any(k.startswith("detector.backbone.") for k in heads)
    other = dict(ckpt, meta=dict(ckpt["meta"], categories=[f"other{i}" for i in range(len(CATEGORIES))]))
    torch.save(other, tmp_path / "other.pt")
    torch.manual_seed(5)
    model = build_model(cfg)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = load_weights(model, tmp_path / "other.pt", ours)
    assert set(loaded.skipped) == heads and "other0" in loaded.note and loaded.count == len(ckpt["model"]) - len(heads)
    now = model.state_dict()
    for k in ckpt["model"]:
        assert torch.equal(now[k], fresh[k] if k in heads else ckpt["model"][k]), k
    # the same names: every tensor, nothing skipped
    assert load_weights(build_model(cfg), ckpt_path, ours) == type(loaded)(len(ckpt["model"]))
    r = runner.invoke(app, ["train", "--source", str(src), "--out", str(tmp_path / "o"), "--steps", "1", "--batch", "2",
                            "--device", "cpu", "--no-progress", "--weights", str(tmp_path / "other.pt")])
    assert r.exit_code == 0 and "tensors of the class and predicate heads kept at their initialisation" in r.output, r.output


def test_loop_options_reach_the_loop_config(setup, tmp_path, monkeypatch):
    """`sim2sg loop` hands its options to `LoopConfig` unchanged (the loop itself is replaced:
    this checks the wiring, not the training)."""
    import sim2sg.loop.run as loop

    _, _, tgt, _ = setup
    seen = []
    monkeypatch.setattr(loop, "run", lambda cfg, log=None, resume=False: seen.append(cfg))
    common = ["loop", "--env", "clevr", "--target", str(tgt), "--loop", "1", "--out", str(tmp_path / "o")]
    r = runner.invoke(app, common + ["--deterministic", "--keep-sdr", "--align-sdr-scenes", "--grl-bound", "0.1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, common)
    assert r.exit_code == 0, r.output
    on, off = seen[:2]
    r = runner.invoke(app, ["loop", "--env", "clevr", "--target", str(tgt), "--iterations", "2", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and seen[-1].iterations == 2, r.output
    assert (on.deterministic, on.keep_sdr, on.align_sdr_scenes, on.grl_bound) == (True, True, True, 0.1)
    assert (off.deterministic, off.keep_sdr, off.align_sdr_scenes, off.grl_bound) == (False, False, False, 0.0)


@pytest.mark.parametrize("edit, field", [(lambda c: c["meta"].pop("categories"), "meta.categories"),
                                         (lambda c: c["meta"].update(categories=["one"]), "meta.categories"),
                                         (lambda c: c["meta"].pop("predicates"), "meta.predicates"),
                                         (lambda c: c.update(meta=[1]), "meta: expected a dict")])
def test_predict_checkpoint_with_broken_meta(setup, tmp_path, edit, field):
    """Found by fuzzing: a checkpoint whose class names do not fit its network predicted into a
    KeyError, TypeError or (fewer names) an IndexError."""
    _, _, tgt, ckpt = setup
    c = torch.load(ckpt, weights_only=True)
    edit(c)
    torch.save(c, tmp_path / "bad.pt")
    r = runner.invoke(app, ["predict", str(tgt), "--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "p"),
                            "--device", "cpu", "--score-thresh", "0"])
    _one_line_error(r, "bad.pt", field)


def test_predict_image_opencv_refuses(setup, tmp_path):
    """A PNG whose header claims 100000 x 100000 pixels: cv2.imread raised cv2.error (traceback)."""
    import shutil
    import struct
    import zlib

    _, _, tgt, ckpt = setup
    folder = tmp_path / "imgs"
    shutil.copytree(tgt, folder)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10**5, 10**5, 8, 2, 0, 0, 0))
                                      + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    r = runner.invoke(app, ["predict", str(folder), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p"), "--device", "cpu"])
    assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    assert [ln for ln in r.output.splitlines() if ln.startswith("error:")] == [
        f"error: {folder / 'huge.png'}: missing or not a readable image", "error: 1 of 3 images not predicted"], r.output


def test_predict_goes_past_unreadable_images(setup, tmp_path):
    """Found by fuzzing: predict stopped at the first unreadable image, and predictions.json was not
    written. Now every readable image is predicted, exactly as in a folder without the bad ones."""
    import shutil

    _, _, tgt, ckpt = setup
    folder = tmp_path / "imgs"
    shutil.copytree(tgt, folder)
    (folder / "000000b.png").write_bytes(b"not a png")
    (folder / "zz.jpg").write_bytes(b"")
    args = ["--checkpoint", str(ckpt), "--device", "cpu", "--score-thresh", "0", "--rel-thresh", "0"]
    r = runner.invoke(app, ["predict", str(folder), "--out", str(tmp_path / "p"), *args])
    assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    assert [ln for ln in r.output.splitlines() if ln.startswith("error:")] == [
        f"error: {folder / '000000b.png'}: missing or not a readable image",
        f"error: {folder / 'zz.jpg'}: missing or not a readable image", "error: 2 of 4 images not predicted"], r.output
    assert "wrote 2 scene graphs" in r.output
    clean = runner.invoke(app, ["predict", str(tgt), "--out", str(tmp_path / "q"), *args])
    assert clean.exit_code == 0, clean.output
    for name in ("predictions.json", "000000.json", "000001.json", "000000.png", "000001.png"):
        assert (tmp_path / "p" / name).read_bytes() == (tmp_path / "q" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(p.name for p in (tmp_path / "q").iterdir())


@pytest.mark.parametrize("option, words", [(["--lr", "inf"], "lr: must be positive and finite"),
                                           (["--grl-weight", "inf"], "grl_weight: must be >= 0 and finite"),
                                           (["--grl-bound", "inf"], "grl_bound: must be >= 0 (0: off) and finite"),
                                           (["--set", "box_score_thresh=NaN"], "model.box_score_thresh")])
def test_train_infinite_settings(setup, tmp_path, option, words):
    """Found by fuzzing: inf passes typer's min=0, and --lr inf wrote a checkpoint of NaN weights
    after one step (a FloatingPointError traceback after two)."""
    _, src, _, _ = setup
    r = runner.invoke(app, ["train", "--source", str(src), "--out", str(tmp_path / "o"), "--steps", "1", "--batch", "2",
                            "--model", "fast", "--device", "cpu", "--no-progress", *option])
    _one_line_error(r, words)
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_a_diverged_run_is_one_line_and_keeps_its_checkpoint(setup, tmp_path):
    """Found by fuzzing: a loss gone NaN was a FloatingPointError traceback. Now one `error:` line
    (exit 1: the input was fine) with the step and the remedy; the checkpoint of step 1 stays."""
    _, src, _, _ = setup
    out = tmp_path / "o"
    r = runner.invoke(app, ["train", "--source", str(src), "--out", str(out), "--steps", "3", "--batch", "2",
                            "--model", "fast", "--device", "cpu", "--no-progress", "--lr", "1e30",
                            "--checkpoint-every", "1"])
    assert r.exit_code == 1 and not isinstance(r.exception, FloatingPointError), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: training diverged at step 2: loss is not finite ("), r.output
    assert lines[0].endswith("; try a lower --lr"), r.output
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 1


def test_a_diverged_loop_is_one_line(setup, tmp_path, monkeypatch):
    import sim2sg.loop.run as loop
    from sim2sg.errors import DivergedError

    def diverge(cfg, log=None, resume=False):
        raise DivergedError(7, {"loss": float("nan")})

    monkeypatch.setattr(loop, "run", diverge)
    r = runner.invoke(app, ["loop", "--env", "clevr", "--target", str(setup[2]), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and r.output.strip() == "error: training diverged at step 7: loss is not finite (loss nan); try a lower --lr", r.output


@pytest.mark.parametrize("model, setting, bounds", [
    ("fast", "max_objects=0", "[1, 512]"), ("fast", "fast_channels=0", "[1, 65536]"),
    ("fast", "domain_hidden=0", "[1, 65536]"), ("frcnn", "roi_batch_per_image=0", "[1, 65536]"),
    ("frcnn", "rel_hidden=0", "[1, 65536]"), ("fast", "message_passing=-1", "[0, 16]"),
    # past the top: fast's max_objects=10**8 allocated for minutes (relation pairs are N^2)
    ("fast", "max_objects=100000000", "[1, 512]"), ("frcnn", "rpn_pre_nms_train=10000000", "[1, 65536]")])
def test_train_integer_model_settings_out_of_their_range(setup, tmp_path, model, setting, bounds):
    """Found by fuzzing: --set max_objects=0 or fast_channels=0 was a torch RuntimeError traceback
    (roi_batch_per_image=0: a NaN loss; rel_hidden=0: a head of no width)."""
    _, src, _, _ = setup
    name, _, value = setting.partition("=")
    r = runner.invoke(app, ["train", "--source", str(src), "--out", str(tmp_path / "o"), "--steps", "1", "--batch", "2",
                            "--model", model, "--device", "cpu", "--no-progress", "--set", setting])
    _one_line_error(r, f"model.{name}: expected an integer in {bounds}, got {value}")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("model, setting, message", [
    # an AssertionError traceback from torchvision's AnchorGenerator
    ("frcnn", "anchor_sizes=[16,32]", "expected 5 numbers like [16, 32, 64, 128, 256], got [16, 32]"),
    # "training diverged ... try a lower --lr": a misleading advice
    ("frcnn", "anchor_sizes=[0,0,0,0,0]", "expected positive integers (pixels), got [0, 0, 0, 0, 0]"),
    ("fast", "image_std=[0,0,0]", "expected positive numbers (an image is divided by them), got [0, 0, 0]"),
    # accepted silently by frcnn (broadcast), a RuntimeError traceback in fast
    ("fast", "image_mean=[0.5]", "expected 3 numbers like [0.485, 0.456, 0.406], got [0.5]"),
    # a ValueError traceback (frcnn), ignored silently (fast)
    ("frcnn", 'align_heads=["bogus"]', "is set by --align (gpa, sapnet), not by --set"),
    ("fast", 'align_heads=["gpa"]', "is set by --align (gpa, sapnet), not by --set")])
def test_train_list_model_settings_are_checked(setup, tmp_path, model, setting, message):
    _, src, _, _ = setup
    r = runner.invoke(app, ["train", "--source", str(src), "--out", str(tmp_path / "o"), "--steps", "1", "--batch", "2",
                            "--model", model, "--device", "cpu", "--no-progress", "--set", setting])
    _one_line_error(r, f"model.{setting.partition('=')[0]}: {message}")
    assert not (tmp_path / "o").exists()


def test_a_loop_cannot_write_into_its_target_folder(setup):
    """Found by fuzzing: `loop --out` equal to `--target` wrote the run's files among the images."""
    from sim2sg.loop.config import LoopConfig

    _, _, tgt, _ = setup
    with pytest.raises(InputError, match=r"--out: out: .* is the target image folder \(--target\)"):
        LoopConfig(env="clevr", target=str(tgt), out=str(tgt / ".." / tgt.name)).validate()
    LoopConfig(env="clevr", target=str(tgt), out=str(tgt / "run")).validate()


def test_integer_model_settings_that_may_be_zero(setup):
    from sim2sg.loop.config import LoopConfig

    _, src, tgt, _ = setup
    zero = {"message_passing": 0, "dc_rel_objects": 0}
    TrainConfig(source=str(src), out="o", model=zero).validate()
    LoopConfig(env="clevr", target=str(tgt), out="o", model=zero).validate()
    with pytest.raises(InputError, match=r"--set: model.dc_objects: expected an integer in \[1, 512\], got 0"):
        LoopConfig(env="clevr", target=str(tgt), out="o", model={"dc_objects": 0}).validate()


@pytest.mark.parametrize("n_images, batch", [(1, 2), (3, 1)])
def test_a_batch_batchnorm_cannot_train_on_is_one_line(tmp_path, n_images, batch):
    """Found by fuzzing: 32x32 images one at a time (--batch 1, or a one-image dataset) reach the
    backbone's last stage as 1x1 maps, and BatchNorm's ValueError was a traceback at step 1 (train
    and loop alike: the check is in train_steps)."""
    src = write_toy_dataset(tmp_path / "src", n_images, np.random.default_rng(0), size=(32, 32))
    r = runner.invoke(app, ["train", "--source", str(src), "--out", str(tmp_path / "run"), "--steps", "1",
                            "--batch", str(batch), "--device", "cpu", "--model", "fast",
                            "--backbone", "resnet10-half", "--no-progress"])
    assert r.exit_code == 2 and "error: --batch: a batch of 1 image of 32x32 pixels" in r.output, r.output
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_names_the_options_it_ignores(setup, tmp_path):
    """`train --resume` continues the stored run: options given that differ from it are named
    as ignored in one line (defaults left out are not: the user did not ask for them)."""
    _, src, _, _ = setup
    out = tmp_path / "o"
    base = ["train", "--source", str(src), "--out", str(out), "--device", "cpu", "--no-progress", "--steps", "1"]
    assert runner.invoke(app, [*base, "--lr", "0.002", "--batch", "2"]).exit_code == 0
    r = runner.invoke(app, [*base, "--resume"])
    assert r.exit_code == 0, r.output
    assert "ignored on --resume" not in r.output  # --lr and --batch left at their defaults: nothing asked
    r = runner.invoke(app, [*base, "--resume", "--lr", "0.01", "--batch", "2", "--no-amp", "--set", "message_passing=0"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if "ignored on --resume" in ln)
    assert "--lr (the run's: 0.002)" in line and "--set (the run's: {})" in line
    assert "--batch" not in line  # the same as the run's
    assert "--no-amp (the run's: True)" in line and "--source" not in line and "--out" not in line


def test_train_on_a_dataset_without_objects_is_refused(setup, tmp_path):
    """A labels file whose images carry no object (or only sub-pixel boxes) has nothing to teach
    the detector: one line naming the file and field, before any training."""
    _, src, _, _ = setup
    data = json.loads((src / "labels.json").read_text())
    for a in data["annotations"]:
        a["bbox"], a["area"] = [a["bbox"][0], a["bbox"][1], 0.5, 0.5], 0.25
        a.pop("segmentation", None), a.pop("visible_pixels", None)
    empty = tmp_path / "empty_ds"
    empty.mkdir()
    for im in data["images"]:
        (empty / im["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        (empty / im["file_name"]).write_bytes((src / im["file_name"]).read_bytes())
    (empty / "labels.json").write_text(json.dumps(data))
    r = runner.invoke(app, ["train", "--source", str(empty), "--out", str(tmp_path / "o"), "--steps", "1", "--device", "cpu"])
    _one_line_error(r, "labels.json", "annotations", "no object box")
    assert not (tmp_path / "o" / "checkpoint.pt").exists()
