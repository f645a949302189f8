"""Hostile inputs through the command line (issue #20): each is exit code 2 and one `error:` line
naming the file and field, never a traceback; good files beside bad ones are still processed and
nothing already written is lost."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.dataset import render_job
from sim2sg.dataset.toy import three_object_sample
from sim2sg.errors import InputError
from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env, parse_env
from sim2sg.scene.sdr import sample_scene, scene_rng

runner = CliRunner()
CLEVR = Path(load_env("clevr").source)


def _refused(r, *fragments, lines: int = 1):
    """Exit 2, `lines` error lines holding `fragments`, no traceback."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and not (r.exception and not isinstance(r.exception, SystemExit)), r.output
    errors = [l for l in r.output.splitlines() if l.startswith("error:")]
    assert len(errors) == lines, r.output
    for f in fragments:
        assert f in r.output, (f, r.output)


def _env_text(**replace) -> str:
    text = (Path(__file__).parents[1] / "scenes" / "clevr.toml").read_text(encoding="utf-8")
    for a, b in replace.items():
        assert a in text, a
        text = text.replace(a, b, 1)
    return text


# ---- environment files ----------------------------------------------------------------------------
def test_non_utf8_environment(tmp_path):
    p = tmp_path / "x.toml"
    p.write_bytes(b"name = \"\xff\xfe\"\n")
    _refused(runner.invoke(app, ["sample", "--env", str(p), "--out", str(tmp_path / "o")]), "x.toml", "not UTF-8")


@pytest.mark.parametrize("typo, field", [("weight = 1.0", "objects.cube.wieght"), ("[lights]", "lightz")])
def test_unknown_environment_fields_are_rejected(tmp_path, typo, field):
    bad = typo.replace("weight", "wieght") if "weight" in typo else "[lightz]\nx = 1\n\n[lights]"
    p = tmp_path / "x.toml"
    p.write_text(_env_text(**{typo: bad}), encoding="utf-8")
    _refused(runner.invoke(app, ["sample", "--env", str(p), "--out", str(tmp_path / "o")]), f"x.toml: {field}: unknown field")
    if "weight" in typo:
        assert "did you mean 'weight'" in runner.invoke(app, ["sample", "--env", str(p), "--out", str(tmp_path)]).output


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "no-such-asset"])
def test_mesh_names_are_asset_names(tmp_path, name):
    p = tmp_path / "x.toml"
    p.write_text(_env_text(**{'mesh = "sphere"': f'mesh = "{name}"'}), encoding="utf-8")
    _refused(runner.invoke(app, ["sample", "--env", str(p), "--out", str(tmp_path / "o")]), "objects.sphere.mesh")


@pytest.mark.parametrize("old, new, message", [
    ("area = [-3.0, 3.0, -3.0, 3.0]", "area = [-1e308, 1e308, -3.0, 3.0]", "placement.area: range too wide"),
    ("yaw = [0.0, 360.0]", "yaw = [-1e308, 1e308]", "objects.cube.yaw: range too wide"),
    ("weight = 1.0", "weight = 1e308", "objects: objects.total needs a positive weight"),  # sum: inf
    ("width = 480", "width = 100000000000", "camera.width: must be <= 16384"),
    ("near = 0.1", 'near = 0.1\nfollow_lane = "false"', "camera.follow_lane: expected true or false"),
    # accepted silently: a metal 5x as metallic as metal, interpenetrating objects, a second background
    ("metallic = 1.0", "metallic = 5.0", "materials.metal.metallic: must be <= 1.0"),
    ("roughness = [0.8, 0.95]", "roughness = [0.8, 1.5]", "materials.rubber.roughness: must be <= 1.0"),
    ("min_dist = 0.25", "min_dist = -0.5", "placement.min_dist: must be >= 0.0"),
    # its graphs would be refused at graph2usd (a field of view past 179 degrees)
    ("hfov_deg = ", "hfov_deg = 179.5 #", "camera.hfov_deg: must be in [0.01, 179.0] degrees"),
    ('categories = ["cube", "sphere", "cylinder"]', 'categories = ["cube", "sphere", "cylinder", "__background__"]',
     "categories: '__background__' is reserved")])
def test_environment_values_the_sampler_cannot_use(tmp_path, old, new, message):
    """Found by fuzzing the CLI: spans past a double (OverflowError), weights summing to inf
    (ValueError from numpy) and an absurd camera width (OverflowError in graph2usd) were tracebacks;
    a quoted "false" switched follow_lane on."""
    p = tmp_path / "x.toml"
    p.write_text(_env_text().replace(old, new), encoding="utf-8")
    _refused(runner.invoke(app, ["sample", "--env", str(p), "--out", str(tmp_path / "o")]), f"x.toml: {message}")


@pytest.mark.parametrize("old, new, message", [
    ("blur_sigma = [0.0, 0.0]", "blur = [0.0, 1.0]", "appearance.post.blur: unknown key"),
    ("noise_std = [0.0, 0.0]", "noise_std = [0.2, 0.1]", "appearance.post.noise_std: expected finite lo <= hi"),
    ("brightness = [1.0, 1.0]", 'brightness = "bright"', "appearance.post.brightness: expected a number or [lo, hi]")])
def test_bad_post_processing_is_refused_when_the_environment_loads(tmp_path, old, new, message):
    """Found by fuzzing: `[appearance.post]` was checked only at render time, so `sample` and
    `graph2usd` took the file and the render of their output failed later."""
    p = tmp_path / "x.toml"
    p.write_text(_env_text(**{old: new}), encoding="utf-8")
    _refused(runner.invoke(app, ["sample", "--env", str(p), "--out", str(tmp_path / "o")]), f"x.toml: {message}")
    assert not (tmp_path / "o").exists()
    folder = _graphs(tmp_path)
    _refused(runner.invoke(app, ["graph2usd", str(folder), "--env", str(p), "--out", str(tmp_path / "usd")]),
             f"x.toml: {message}")
    assert not list((tmp_path / "usd").glob("*.usdc"))


def test_a_camera_looking_straight_down_still_has_front_and_behind(tmp_path):
    """The ground directions came out NaN, so no pair was ever front/behind (silently)."""
    import tomllib

    raw = tomllib.loads(_env_text(**{"position = [7.359, -6.926, 4.958]": "position = [0.0, 0.0, 10.0]",
                                     "position_jitter = [0.5, 0.5, 0.5]": "position_jitter = [0.0, 0.0, 0.0]"}))
    g = sample_scene(parse_env(raw, "x.toml"), scene_rng(0, 0))
    assert {"front", "behind", "left", "right"} <= {k for _, _, k in g.edges(keys=True)}


def test_a_tall_image_needs_a_vertical_view_under_179_degrees():
    """An hfov of 49 degrees on a 48x16000 image sees 179.2 degrees vertically: its graphs would be
    refused at graph2usd, so the environment is refused first."""
    import tomllib

    raw = tomllib.loads(_env_text())
    raw["camera"].update(width=48, height=16000)
    with pytest.raises(InputError, match=r"camera.hfov_deg: a field of view of 49.1 x 179 degrees"):
        parse_env(raw, "x.toml")
    raw["camera"].update(height=1600)  # 172 degrees vertically: a camera
    parse_env(raw, "x.toml")


def test_material_names_are_names():
    import tomllib

    raw = tomllib.loads(_env_text(**{"[materials.metal]": "[materials.\"../metal\"]"}))
    with pytest.raises(InputError, match="is not a name"):
        parse_env(raw, "x.toml")


# ---- scene graphs ---------------------------------------------------------------------------------
def _graphs(tmp_path) -> Path:
    folder = tmp_path / "graphs"
    e = load_env("clevr")
    for i in range(2):
        sg.write_graph(folder / f"good{i}.json", sample_scene(e, scene_rng(0, i)))
    return folder


def _edit_graph(path: Path, **fields) -> None:
    import json

    d = json.loads(path.read_text())
    d["objects"][0].update(fields)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("fields, message", [({"texture": "velvet"}, "objects[0].texture: unknown texture family"),
                                             ({"material": "gold"}, "objects[0].material: unknown material")])
def test_bad_graph_beside_good_ones(tmp_path, fields, message):
    folder = _graphs(tmp_path)
    shutil.copy(folder / "good0.json", folder / "bad.json")
    _edit_graph(folder / "bad.json", **fields)
    out = tmp_path / "usd"
    r = runner.invoke(app, ["graph2usd", str(folder), "--out", str(out)])
    _refused(r, f"bad.json: {message}", "1 of 3 graphs failed", lines=2)
    assert sorted(p.name for p in out.glob("*.usdc")) == ["good0.usdc", "good1.usdc"]


def test_a_custom_environment_with_a_builtin_name_hints_at_env(tmp_path):
    """Found by fuzzing: a file that kept `name = "clevr"` wrote graphs whose `env` is "clevr", and
    graph2usd without --env read them against the built-in: "unknown category 'my cube'" alone."""
    p = tmp_path / "x.toml"
    p.write_text(_env_text(**{"[objects.cube]": '[objects."my cube"]', 'categories = ["cube"': 'categories = ["my cube"'}),
                 encoding="utf-8")
    r = runner.invoke(app, ["sample", "--env", str(p), "--count", "1", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "graphs"
    import json

    assert "my cube" in {o["category"] for o in json.loads((folder / "000000.json").read_text())["objects"]}
    r = runner.invoke(app, ["graph2usd", str(folder), "--out", str(tmp_path / "usd")])
    _refused(r, "000000.json: objects[", "unknown category 'my cube'", "scenes/clevr.toml",
             "pass --env FILE", lines=2)
    r = runner.invoke(app, ["graph2usd", str(folder), "--env", str(p), "--out", str(tmp_path / "usd")])
    assert r.exit_code == 0 and (tmp_path / "usd" / "000000.usdc").is_file(), r.output


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["camera"].update(width=10**12), "camera.width: must be <= 16384"),
    (lambda d: d["camera"].update(orientation=[0] * 9), "camera.orientation: must be a rotation matrix"),
    (lambda d: d["camera"].update(fx=1e-300), "camera.fx: a field of view of 180 x"),  # failed only at render
    (lambda d: d["camera"].update(fx=1e308, fy=1e308), "camera.fx: a field of view of"),
    (lambda d: d["context"].update(extent="big"), "context.extent: expected a number"),
    (lambda d: d["context"].update(extent=-5), "context.extent: must be positive"),
    (lambda d: d["context"].update(kind="nope"), "context.kind: expected one of ground, room, road"),
    (lambda d: d["context"].update(kind="road"), "context.lanes: missing required field"),
    (lambda d: d.update(context={"predicted": True}), "context.kind: missing: no 3D scene to compile")])
def test_graph_camera_and_context_are_checked(tmp_path, edit, message):
    """Found by fuzzing the CLI: these compiled into a traceback (OverflowError, KeyError,
    ValueError) or a NaN camera / an inside-out ground."""
    import json

    folder = _graphs(tmp_path)
    d = json.loads((folder / "good0.json").read_text())
    edit(d)
    (folder / "bad.json").write_text(json.dumps(d))
    r = runner.invoke(app, ["graph2usd", str(folder), "--out", str(tmp_path / "usd")])
    _refused(r, f"bad.json: {message}", "1 of 3 graphs failed", lines=2)


def test_deeply_nested_json(tmp_path):
    folder = _graphs(tmp_path)
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    r = runner.invoke(app, ["graph2usd", str(folder), "--out", str(tmp_path / "usd")])
    _refused(r, "deep.json", "nested too deeply", lines=2)
    p = tmp_path / "pred.json"
    p.write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    from sim2sg.eval.predictions import load_predictions

    with pytest.raises(InputError, match="nested too deeply"):
        load_predictions(p)


@pytest.mark.parametrize("command", ["sample", "graph2usd", "render", "train", "loop"])
def test_out_naming_a_file(tmp_path, command):
    f = tmp_path / "file"
    f.write_text("keep me")
    args = {"sample": ["sample"], "graph2usd": ["graph2usd", str(_graphs(tmp_path))],
            "render": ["render", str(tmp_path), "--size", "32x32"], "train": ["train", "--source", str(tmp_path)],
            "loop": ["loop", "--env", "clevr", "--target", str(tmp_path)]}[command]
    _refused(runner.invoke(app, args + ["--out", str(f)]), "exists and is not a folder")
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("size", ["99999999999999999999x64", "10000000x1", "20000x20000", "5000x5000", "0x5", "axb"])
def test_absurd_sizes_are_refused_up_front(tmp_path, size):
    r = runner.invoke(app, ["render", str(tmp_path), "--size", size, "--out", str(tmp_path / "o")])
    _refused(r, "--size")
    if size[0] not in "0a":
        assert "16384" in r.output or "16777216" in r.output
    assert not (tmp_path / "o").exists()


# ---- USD stages -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    from sim2sg.scene.look import randomize_look
    from sim2sg.usd.compile import compile_graph, look_rng
    from sim2sg.usd.stage import write_stage

    root = tmp_path_factory.mktemp("stages")
    e = load_env("clevr")
    for i in range(2):
        g = sample_scene(e, scene_rng(0, i))
        stage, _ = compile_graph(g, e, randomize_look(g, e, look_rng(0, str(i))))
        write_stage(stage, root / f"good{i}.usda")
    return root


def _hostile_stages(root: Path) -> dict[str, str]:
    good = (root / "good0.usda").read_text()
    crate = root / "crate.usdc"
    from pxr import Sdf

    Sdf.Layer.FindOrOpen(str(root / "good0.usda")).Export(str(crate))
    b = crate.read_bytes()
    crate.unlink()
    files = {"text.usda": b"hello, not a stage\n", "random.usdc": np.random.default_rng(0).bytes(4096),
             "truncated.usdc": b[: len(b) // 2], "empty.usdc": b"",
             "sublayer.usda": good.replace("(\n", "(\n    subLayers = [@./missing.usda@]\n", 1).encode(),
             "inf.usda": good.replace("double3 xformOp:translate = (", "double3 xformOp:translate = (inf, ", 1)
             .replace("(inf, ", "(inf, 0, 0)\n    double3 xformOp:unused = (", 1).encode()}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {"text.usda": "not a valid usda layer", "random.usdc": "corrupt", "truncated.usdc": "truncated",
            "empty.usdc": "cannot open", "sublayer.usda": "sublayer not found", "inf.usda": "not finite"}


def test_broken_stages_beside_good_ones(stages, tmp_path):
    root = tmp_path / "st"
    shutil.copytree(stages, root)
    expected = _hostile_stages(root)
    out = tmp_path / "data"
    r = runner.invoke(app, ["render", str(root), "--size", "32x32", "--out", str(out), "--no-progress", "--device", "cpu"])
    _refused(r, *[f"{name}: " for name in expected], *expected.values(), lines=len(expected))
    import json

    labels = json.loads((out / "labels.json").read_text())
    assert len(labels["images"]) == 2  # the good stages rendered


def test_non_finite_geometry_names_the_prim(stages, tmp_path):
    from sim2sg.usd.read import load_scene

    text = (stages / "good0.usda").read_text()
    i = text.index("point3f[] points = [(") + len("point3f[] points = [(")
    (tmp_path / "big.usda").write_text(text[:i] + "3e38, " + text[i + text[i:].index(",") + 2:])
    with pytest.raises(InputError, match=r"big.usda: /\S+: world coordinates not finite or beyond"):
        load_scene(tmp_path / "big.usda", 32, 32)


# ---- datasets -------------------------------------------------------------------------------------
def _dataset(out: Path, n: int, names=None) -> None:
    stages = []
    for i in range(n):
        p = out.parent / "stages" / f"{(names or 's')}{i:03d}.usda"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"#usda 1.0\n# {p.name}\n")
        stages.append(p)
    job = render_job.RenderJob(out_dir=out, width=64, height=48, writers=("coco", "sg", "kitti"))
    return render_job.run(stages, job, render_fn=lambda ps, o, d: [three_object_sample(Path(p).stem) for p in ps],
                          env_of_stage=lambda p: None, progress=False), stages, job


def test_rendering_another_dataset_into_one_is_refused_or_replaces_it_whole(tmp_path):
    out = tmp_path / "data"
    _dataset(out, 6)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = []
    for i in range(2):
        p = tmp_path / "other" / f"x{i}.usda"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"#usda 1.0\n# other {i}\n")
        other.append(p)
    fake = lambda ps, o, d: [three_object_sample(Path(p).stem) for p in ps]  # noqa: E731
    job = render_job.RenderJob(out_dir=out, width=64, height=48, writers=("coco", "sg", "kitti"))
    with pytest.raises(InputError, match="holds another dataset"):
        render_job.run(other, job, render_fn=fake, env_of_stage=lambda p: None, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # intact
    job = render_job.RenderJob(out_dir=out, width=64, height=48, writers=("coco", "sg"), overwrite=True)
    rep = render_job.run(other, job, render_fn=fake, env_of_stage=lambda p: None, progress=False)
    assert rep.rendered == 2
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert not [p for p in left if any(f"00000{i}" in p for i in range(2, 6))]  # no orphans
    assert not [p for p in left if p.startswith("kitti/")]


def test_finished_rerun_writes_nothing_for_every_writer(tmp_path):
    from sim2sg.dataset import writers

    out = tmp_path / "data"
    stages = []
    for i in range(3):
        p = tmp_path / "st" / f"s{i}.usda"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"#usda 1.0\n# {i}\n")
        stages.append(p)
    calls = []

    def fake(ps, o, d):
        calls.append(len(ps))
        s = three_object_sample(Path(ps[0]).stem)
        import dataclasses

        empty = dataclasses.replace(s, objects=(), relations=())
        return [empty if Path(p).stem == "s1" else three_object_sample(Path(p).stem) for p in ps]

    job = render_job.RenderJob(out_dir=out, width=64, height=48, writers=tuple(writers.WRITERS))
    render_job.run(stages, job, render_fn=fake, env_of_stage=lambda p: None, progress=False)
    n = len(calls)
    assert (out / "kitti" / "label_2" / "000001.txt").read_bytes() == b""  # no visible object: an empty label file
    rep = render_job.run(stages, job, render_fn=fake, env_of_stage=lambda p: None, progress=False)
    assert (rep.rendered, rep.skipped, len(calls)) == (0, 3, n)


def test_atomic_writes_honour_the_umask(tmp_path):
    from sim2sg import atomic

    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic.write_bytes(tmp_path / "b.bin", b"x")
        assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_dataset_problems_fail_up_front(tmp_path):
    import json

    from sim2sg.train.data import LabelledDataset

    out = tmp_path / "data"
    _dataset(out, 2)
    labels = json.loads((out / "labels.json").read_text())
    cases = {"missing": ("images", 0, "file_name", "images/nope.png", "does not exist"),
             "escape": ("images", 0, "file_name", "../../etc/passwd", "inside the dataset folder"),
             "rle": ("annotations", 0, "segmentation", {"size": [48, 64], "counts": "0000"}, "runs cover"),
             "garbage": ("annotations", 0, "segmentation", {"size": [48, 64], "counts": "\x7f\x7f"}, "not a COCO")}
    for name, (table, k, key, value, message) in cases.items():
        bad = json.loads(json.dumps(labels))
        bad[table][k][key] = value
        (out / "labels.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=message):
            LabelledDataset(out)
    (out / "labels.json").write_text(json.dumps(labels))
    assert len(LabelledDataset(out)) == 2


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
@pytest.mark.parametrize("command", [["sample", "--count", "1"], ["graph2usd", "GRAPHS"],
                                     ["train", "--source", "DATA", "--steps", "1"],
                                     ["loop", "--env", "clevr", "--target", "DATA"], ["demo"]])
def test_seeds_outside_64_bits_are_usage_errors(tmp_path, command, seed):
    """Found by fuzzing: --seed -1 was a numpy traceback (sample, graph2usd, train, loop, demo) and
    a seed past 2**64 a torch one (train, loop)."""
    args = [str(tmp_path) if a in ("GRAPHS", "DATA") else a for a in command]
    r = runner.invoke(app, args + ["--seed", seed, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--seed" in r.output, r.output
    assert not (r.exception and not isinstance(r.exception, SystemExit)), r.output
    assert not (tmp_path / "o").exists()


def _toy(root: Path, rename: dict | None = None) -> Path:
    """A 2-image toy dataset (square, disc, triangle; left, right, front, behind), its names renamed."""
    import json

    from sim2sg.train.toydata import write_toy_dataset

    d = write_toy_dataset(root, 2, np.random.default_rng(0), size=(32, 32))
    labels = json.loads((Path(d) / "labels.json").read_text())
    for c in labels["categories"] + labels["predicate_categories"]:
        c["name"] = (rename or {}).get(c["name"], c["name"])
    (Path(d) / "labels.json").write_text(json.dumps(labels))
    return Path(d)


def test_val_of_another_vocabulary_is_refused_before_training(tmp_path):
    """Found by fuzzing: `train --val` / `loop --eval-data` of another environment's dataset (dining
    against clevr) failed after training, as '<predictions>: predicate_names: ...'; an oracle's
    training data in other names trained silently under the environment's."""
    import dataclasses
    from types import SimpleNamespace

    from sim2sg.loop.config import LoopConfig
    from sim2sg.loop.trainer import make_trainer
    from sim2sg.train.toydata import CATEGORIES, PREDICATES

    src = _toy(tmp_path / "src")
    other = _toy(tmp_path / "other", {"square": "table", "front": "on"})
    args = ["--source", str(src), "--out", str(tmp_path / "run"), "--steps", "1", "--batch", "2", "--device", "cpu",
            "--model", "fast", "--backbone", "resnet10-half", "--no-progress"]
    _refused(runner.invoke(app, ["train", *args, "--val", str(other)]),
             "other/labels.json: categories: lacks the model's categories ['square']", "--val")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert runner.invoke(app, ["train", *args, "--val", str(src)]).exit_code == 0
    env = SimpleNamespace(name="toy", categories=CATEGORIES, predicates=PREDICATES)  # all make_trainer reads
    cfg = LoopConfig(env="toy", target=str(src / "images"), out=str(tmp_path / "loop"), width=32, height=32,
                     sdr_scenes=1, arch="fast", backbone="resnet10-half", device="cpu")
    for extra, message in [({"eval_data": str(other)}, "--eval-data cannot score"),
                           ({"method": "oracle", "oracle_data": str(other)}, "--oracle-data must be labelled")]:
        with pytest.raises(InputError, match=message):
            make_trainer(dataclasses.replace(cfg, **extra), env)
    make_trainer(dataclasses.replace(cfg, eval_data=str(src)), env)
