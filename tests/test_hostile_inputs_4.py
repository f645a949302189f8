"""Hostile inputs, fourth sweep (eval, predict, sample/graph2usd, envs/demo, loop): each is exit code 2
and one `error:` line naming the file and field, never a traceback, and nothing already written is
lost."""

import json
import sys
from pathlib import Path

import pytest
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scene, scene_rng

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_cli import dataset  # noqa: E402,F401  (the fixture: a cube and a sphere, one relation)
from test_eval_cli import good_preds as _good_preds  # noqa: E402

runner = CliRunner()
CLEVR_TOML = Path(__file__).parents[1] / "scenes" / "clevr.toml"
HUGE = "1" + "0" * 400  # an integer literal past float's range


def _refused(r, *fragments, lines: int = 1):
    """Exit 2, `lines` error lines holding `fragments`, no traceback."""
    assert r.exit_code == 2, r.output
    assert not (r.exception and not isinstance(r.exception, SystemExit)), repr(r.exception)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == lines, r.output
    for f in fragments:
        assert f in r.output, (f, r.output)




def _eval(dataset, predictions: Path, *extra):
    return runner.invoke(app, ["eval", "--data", str(dataset), "--predictions", str(predictions), *extra])


# ---- integers past float's range ----------------------------------------------------------------
@pytest.mark.parametrize("value, field", [
    (HUGE, "images[0].objects[0].score"),
    ("1" + "0" * 5000, "images[0].objects[0].score"),  # was "Exceeds the limit (4300 digits)", no field
    ("-" + HUGE, "images[0].objects[0].score"),
])
def test_predictions_with_an_integer_past_float_range(dataset, tmp_path, value, field):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_good_preds()).replace("0.9", value, 1))
    _refused(_eval(dataset, p), f"{p}: {field}:")


def test_predicted_box_past_float_range(dataset, tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_good_preds()).replace("[0, 0, 10, 10]", f"[0, 0, {HUGE}, 10]", 1))
    _refused(_eval(dataset, p), f"{p}: images[0].objects[0].box:")


def test_labels_box_past_float_range(dataset, tmp_path):
    labels = dataset / "labels.json"
    labels.write_text(labels.read_text().replace('"bbox": [0', f'"bbox": [{HUGE}', 1))
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_good_preds()))
    _refused(_eval(dataset, p), f"{labels}: annotations[0].bbox[0]:")


@pytest.mark.parametrize("path, field", [(("objects", 0, "yaw"), "objects[0].yaw"),
                                         (("camera", "fx"), "camera.fx"), (("context", "extent"), "context.extent")])
def test_graph_number_past_float_range(tmp_path, path, field):
    g = tmp_path / "g.json"
    sg.write_graph(g, sample_scene(load_env("clevr"), scene_rng(0, 0)))
    data = json.loads(g.read_text())
    d = data
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = "HUGE"
    g.write_text(json.dumps(data).replace('"HUGE"', HUGE))
    r = runner.invoke(app, ["graph2usd", str(g), "--out", str(tmp_path / "usd")])
    _refused(r, f"{g}: {field}: ", "finite", lines=2)  # the graph's line and the count of failures


@pytest.mark.parametrize("old, new, field", [
    ("near = 0.1", f"near = {HUGE}", "camera.near"),
    ("small = 0.35", f"small = -{HUGE}", "sizes.small"),
])
def test_environment_number_past_float_range(tmp_path, old, new, field):
    text = CLEVR_TOML.read_text(encoding="utf-8")
    assert old in text
    e = tmp_path / "e.toml"
    e.write_text(text.replace(old, new, 1), encoding="utf-8")
    _refused(runner.invoke(app, ["sample", "--env", str(e), "--out", str(tmp_path / "o")]), f"{e}: {field}: must be finite")


def test_environment_nested_too_deeply(tmp_path):
    e = tmp_path / "deep.toml"
    e.write_text("a = " + "[" * 500 + "]" * 500 + "\n")  # was a RecursionError inside tomllib
    _refused(runner.invoke(app, ["sample", "--env", str(e), "--out", str(tmp_path / "o")]), f"{e}: ", "nested too deeply")


@pytest.mark.parametrize("text, field, words", [
    ('{"width": 64, "height": 64, "hfov_deg": HUGE}', "hfov_deg", "finite"),  # was OverflowError
    ('{"width": 64, "height": 64, "hfov_deg": 1' + "0" * 5000 + "}", "hfov_deg", "finite"),  # was ValueError
    ("[" * 5000 + "]" * 5000, "", "nested too deeply"),  # was RecursionError
])
def test_target_camera_json_that_gave_a_traceback(tmp_path, text, field, words):
    import cv2
    import numpy as np

    from sim2sg.errors import InputError
    from sim2sg.loop.synthesis import target_camera
    from sim2sg.scene.calib import target_cameras

    image = tmp_path / "000000.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    f = tmp_path / "cam.json"
    f.write_text(text.replace("HUGE", HUGE))
    with pytest.raises(InputError) as e:
        target_cameras(f, [image], target_camera(load_env("clevr"), 480, 320))
    assert e.value.source == str(f) and e.value.field == field and words in str(e.value)


# ---- other tools' labels (COCO instances) as --data ---------------------------------------------
def _set_annotation_id(d):
    d["annotations"][1]["id"] = [1, 2]


@pytest.mark.parametrize("edit, field", [
    (_set_annotation_id, "annotations[1].id"),  # was TypeError: unhashable type: 'list'
    (lambda d: d.update(predicate_categories=10), "predicate_categories"),  # was TypeError: not iterable
    (lambda d: d.update(relationships=[{"subject_id": [1], "object_id": 2, "predicate": "left"}]),
     "relationships[0].image_id"),  # was TypeError: the subject id was hashed to find its image
])
def test_coco_data_that_gave_a_traceback(tmp_path, edit, field):
    data = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48}],
            "categories": [{"id": 3, "name": "cube"}, {"id": 5, "name": "sphere"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 10]},
                            {"id": 2, "image_id": 7, "category_id": 5, "bbox": [20, 2, 10, 10]}]}
    edit(data)
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps(data))
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_good_preds()))
    _refused(_eval(coco, p), f"{coco}: {field}:")


# ---- a run folder where a checkpoint file goes ----------------------------------------------------
@pytest.mark.parametrize("command", ["eval", "predict", "train"])
def test_a_run_folder_for_a_checkpoint_names_the_file_inside(tmp_path, dataset, command):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")  # never read: the folder is refused first
    if command == "train":
        import numpy as np

        from sim2sg.train.toydata import write_toy_dataset

        dataset = write_toy_dataset(tmp_path / "toy", 2, np.random.default_rng(0), size=(32, 32))
    args = {"eval": ["eval", "--data", str(dataset), "--checkpoint", str(run)],
            "predict": ["predict", str(dataset), "--checkpoint", str(run), "--out", str(tmp_path / "o")],
            "train": ["train", "--source", str(dataset), "--weights", str(run), "--out", str(tmp_path / "o"),
                      "--steps", "1", "--device", "cpu", "--no-progress"]}[command]
    # was "run: checkpoint not found" (and "weights file not found") of a folder that exists
    _refused(runner.invoke(app, args), f"{run}: is a folder, not a ", f"it holds {run / 'checkpoint.pt'}")


# ---- predict: images of odd shapes and modes -------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A freshly initialised Faster R-CNN checkpoint of the toy vocabulary at 64x64."""
    from sim2sg.model import ModelConfig
    from sim2sg.train.checkpoint import save_checkpoint
    from sim2sg.train.config import TrainConfig
    from sim2sg.train.steps import new_state
    from sim2sg.train.toydata import CATEGORIES, PREDICATES

    root = tmp_path_factory.mktemp("ckpt")
    cfg = TrainConfig(source=str(root), out=str(root), device="cpu")
    state = new_state(cfg, ModelConfig(num_classes=len(CATEGORIES), num_predicates=len(PREDICATES), image_size=(64, 64)))
    path = root / "checkpoint.pt"
    save_checkpoint(path, state, cfg, {"categories": list(CATEGORIES), "predicates": list(PREDICATES), "env": "toy",
                                       "image_size": [64, 64]})
    return path


def test_predict_names_an_image_too_elongated_for_the_network_and_predicts_the_rest(tmp_path, checkpoint,
                                                                                    one_thread):
    import cv2
    import numpy as np

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    kinds = {"a_rgb.png": rng.integers(0, 256, (48, 64, 3)).astype(np.uint8),
             "b_gray16.png": rng.integers(0, 65536, (40, 40)).astype(np.uint16),
             "c_rgba.png": rng.integers(0, 256, (32, 48, 4)).astype(np.uint8),
             "d_one_pixel.png": np.zeros((1, 1, 3), np.uint8),
             "e_thin.png": np.zeros((2, 3000, 3), np.uint8)}  # was a RuntimeError from torchvision's resize
    for name, pixels in kinds.items():
        cv2.imwrite(str(images / name), pixels)
    out = tmp_path / "out"
    r = runner.invoke(app, ["predict", str(images), "--checkpoint", str(checkpoint), "--out", str(out),
                            "--device", "cpu"])
    _refused(r, f"{images / 'e_thin.png'}: 3000x2 pixels is too elongated for the network", "1 of 5 images not predicted",
             lines=2)
    assert sorted(p.stem for p in out.glob("*.json") if p.stem != "predictions") == sorted(
        Path(n).stem for n in kinds if n != "e_thin.png")
    assert len(json.loads((out / "predictions.json").read_text())["images"]) == 4


def test_the_drawing_of_a_thin_image_stays_bounded():
    import numpy as np

    from sim2sg.train.draw import draw_graph

    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0),
             "rel_pairs": np.zeros((0, 2), int), "rel_scores": np.zeros((0, 3))}
    pic = draw_graph(np.zeros((4, 600, 3), np.uint8), empty, ["cube"], ["left", "right"], panel=200)
    assert pic.shape[1] <= 4096 + 200 and pic.shape[0] >= 4  # was 384 x 57,800: 96x to a 384 px short side


# ---- sample into a folder of earlier graphs ---------------------------------------------------------
def test_sample_never_replaces_the_graphs_of_another_seed_or_environment(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, ["sample", "--count", "3", "--seed", "1", "--out", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "graphs").glob("*.json")}
    # the same run again (and extended) rewrites the same scenes
    assert runner.invoke(app, ["sample", "--count", "4", "--seed", "1", "--out", str(out)]).exit_code == 0
    assert all((out / "graphs" / n).read_bytes() == b for n, b in before.items())
    for args in (["--seed", "2"], ["--env", "dining", "--seed", "1"]):  # were silently mixed into the run
        r = runner.invoke(app, ["sample", "--count", "2", "--out", str(out), *args])
        _refused(r, f"{out / 'graphs' / '000000.json'}: holds another scene")
    assert all((out / "graphs" / n).read_bytes() == b for n, b in before.items())
    r = runner.invoke(app, ["sample", "--count", "2", "--start", "4", "--seed", "2", "--out", str(out)])
    assert r.exit_code == 0 and len(list((out / "graphs").glob("*.json"))) == 6


def test_predict_into_its_image_folder_is_refused(tmp_path, checkpoint):
    import cv2
    import numpy as np

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "000000.png"), np.full((32, 32, 3), 7, np.uint8))
    before = (images / "000000.png").read_bytes()
    for out in (images, tmp_path / "." / "images"):  # the drawing 000000.png replaced the image
        r = runner.invoke(app, ["predict", str(images), "--checkpoint", str(checkpoint), "--out", str(out)])
        _refused(r, f"--out {out}: is the image folder")
    assert (images / "000000.png").read_bytes() == before and sorted(images.iterdir()) == [images / "000000.png"]


def test_predict_names_images_whose_outputs_would_replace_others(tmp_path, checkpoint, one_thread):
    import cv2
    import numpy as np

    images = tmp_path / "images"
    images.mkdir()
    for name, value in (("a.jpg", 10), ("a.png", 200), ("predictions.png", 90), ("b.png", 40)):
        cv2.imwrite(str(images / name), np.full((32, 32, 3), value, np.uint8))
    out = tmp_path / "out"
    r = runner.invoke(app, ["predict", str(images), "--checkpoint", str(checkpoint), "--out", str(out),
                            "--device", "cpu"])
    # were a.png's graph over a.jpg's, and predictions.png's graph replaced by predictions.json
    _refused(r, f"{images / 'a.png'}: its graph a.json would replace that of a.jpg",
             f"{images / 'predictions.png'}: its graph predictions.json would replace the predictions file",
             "2 of 4 images not predicted", lines=3)
    names = [im["file_name"] for im in json.loads((out / "predictions.json").read_text())["images"]]
    assert names == ["a.jpg", "b.png"]
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "b.json", "b.png", "predictions.json"]


# ---- graph2usd: two graphs of one name -------------------------------------------------------------
def test_graph2usd_names_a_graph_whose_stage_would_replace_another(tmp_path):
    for folder, seed in (("a", 1), ("b", 2)):
        sg.write_graph(tmp_path / folder / "000000.json", sample_scene(load_env("clevr"), scene_rng(seed, 0)))
    out = tmp_path / "usd"
    # was "wrote 2 stages" and one stage, b's over a's
    r = runner.invoke(app, ["graph2usd", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    _refused(r, f"{tmp_path / 'b' / '000000.json'}: its stage 000000.usdc would replace that of "
                f"{tmp_path / 'a' / '000000.json'}", "wrote 1 stage to", lines=2)
    # one file named twice is compiled once, not refused
    g = tmp_path / "a" / "000000.json"
    r = runner.invoke(app, ["graph2usd", str(g), str(tmp_path / "a"), "--out", str(tmp_path / "usd2")])
    assert r.exit_code == 0 and "wrote 1 stage to" in r.output, r.output


def test_sample_count_past_64_bits_starts_sampling(tmp_path, monkeypatch):
    """A --count past 2**63 was an OverflowError (tqdm's len() of the range) before any scene."""
    from sim2sg.scene import sdr

    real, calls = sdr.sample_scene, []

    def two_then_interrupt(env, rng):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(env, rng)

    monkeypatch.setattr(sdr, "sample_scene", two_then_interrupt)
    r = runner.invoke(app, ["sample", "--count", str(10**26), "--out", str(tmp_path)])
    assert r.exit_code == 130 and "interrupted" in r.output, (r.output, r.exception)
    assert len(list((tmp_path / "graphs").glob("*.json"))) == 2


# ---- found by the sweep, fixed after it ------------------------------------------------------------
def test_eval_checkpoint_of_other_classes_is_refused_before_predicting(tmp_path, dataset, checkpoint, monkeypatch):
    """A checkpoint of the toy shapes scored on a cube/sphere dataset: refused from the labels
    alone (was: the whole set predicted first, then an error only if a foreign class came up)."""
    import cv2
    import numpy as np

    import sim2sg.train.predict as P

    for im in json.loads((dataset / "labels.json").read_text())["images"]:
        (dataset / im["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dataset / im["file_name"]), np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setattr(P, "predict", lambda *a, **k: pytest.fail("predicted before the vocabulary check"))
    r = runner.invoke(app, ["eval", "--data", str(dataset), "--checkpoint", str(checkpoint), "--device", "cpu"])
    _refused(r, f"{dataset / 'labels.json'}: categories:", "lacks the model's categories")


def test_predictions_version_true_is_not_version_1(dataset, tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({**_good_preds(), "version": True}))
    _refused(_eval(dataset, p), f"{p}: version:", "unsupported version True")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_eval_out_on_a_path_that_cannot_be_written_is_one_line(dataset, tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_good_preds()))
    r = _eval(dataset, p, "--out", "/proc/sim2sg_metrics.json")  # was a FileNotFoundError traceback
    _refused(r, "error: /proc/")


def test_train_workers_are_bounded(tmp_path):
    r = runner.invoke(app, ["train", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", str(10**23)])
    assert r.exit_code == 2 and "--workers" in r.output and "256" in r.output, r.output  # a usage error
