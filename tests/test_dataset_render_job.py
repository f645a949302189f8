"""The render driver: resume, atomicity of an image, bad stages, determinism (fake renderer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim2sg.dataset import coco as labels
from sim2sg.dataset import render_job
from sim2sg.dataset.toy import three_object_sample
from sim2sg.errors import InputError
from sim2sg.render.post import PostProcess
from sim2sg.render.settings import environment_settings


class FakeRenderer:
    """Records which stages it renders; a stage whose text contains "BAD" raises InputError."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.options: list = []  # RenderOptions

    def __call__(self, paths, options, device):
        self.calls.append([Path(p).name for p in paths])
        self.options.append(options)
        for p in paths:
            if "BAD" in Path(p).read_text():
                raise InputError(p, "", "no camera")
        return [three_object_sample(Path(p).stem) for p in paths]


def make_stages(root: Path, n: int, bad: tuple[int, ...] = ()) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"s{i:03d}.usda").write_text(f"#usda 1.0\n# stage {i} {'BAD' if i in bad else ''}\n")
    (root / "notes.txt").write_text("not a stage")
    return render_job.discover_stages(root)


def run(stages, out, fake, **kw):
    job = render_job.RenderJob(out_dir=out, width=64, height=48, writers=("coco", "sg", "kitti", "clevr"),
                               batch=kw.pop("batch", 2), **kw)
    return render_job.run(stages, job, render_fn=fake, env_of_stage=lambda p: None, progress=False)


def snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}


def test_discover_stages(tmp_path):
    stages = make_stages(tmp_path / "st", 3)
    assert [p.name for p in stages] == ["s000.usda", "s001.usda", "s002.usda"]
    assert render_job.discover_stages(stages[1]) == [stages[1]]
    with pytest.raises(InputError, match="no USD stages"):
        render_job.discover_stages(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        render_job.discover_stages(tmp_path / "missing")


def test_rerun_is_a_noop_and_deleting_one_image_redoes_only_it(tmp_path):
    stages = make_stages(tmp_path / "st", 5)
    out = tmp_path / "out"
    fake = FakeRenderer()
    rep = run(stages, out, fake)
    assert (rep.rendered, rep.skipped, rep.ok) == (5, 0, True)
    assert fake.calls == [["s000.usda", "s001.usda"], ["s002.usda", "s003.usda"], ["s004.usda"]]
    assert labels.validate_dataset(out)["images"] == 5
    before = snapshot(out)

    fake2 = FakeRenderer()
    rep = run(stages, out, fake2)
    assert (rep.rendered, rep.skipped) == (0, 5) and fake2.calls == []
    assert snapshot(out) == before  # nothing rewritten, not even labels.json

    (out / "depth/000003.png").unlink()
    fake3 = FakeRenderer()
    rep = run(stages, out, fake3)
    assert fake3.calls == [["s003.usda"]] and (rep.rendered, rep.skipped) == (1, 4)
    after = snapshot(out)
    assert {k for k in after if after[k] != before.get(k)} == {
        "labels/000003.json", "depth/000003.png", "images/000003.png", "instances/000003.png",
        "semantics/000003.png", "scene_graphs/000003.json", "kitti/image_2/000003.png",
        "kitti/label_2/000003.txt", "kitti/calib/000003.txt", "clevr/scenes/000003.json"}
    assert {k for k in after if after[k][1] != before[k][1]} == set()  # same bytes again


def test_changed_stage_or_settings_rerender(tmp_path):
    stages = make_stages(tmp_path / "st", 3)
    out = tmp_path / "out"
    run(stages, out, FakeRenderer())
    stages[1].write_text("#usda 1.0\n# edited\n")
    fake = FakeRenderer()
    run(stages, out, fake)
    assert fake.calls == [["s001.usda"]]
    fake = FakeRenderer()
    run(stages, out, fake, seed=7)
    assert fake.calls == [["s000.usda", "s001.usda"], ["s002.usda"]] and fake.options[0].seed == 7


def test_crash_mid_image_leaves_no_fragment_and_resumes(tmp_path, monkeypatch):
    from sim2sg.dataset import writers

    stages = make_stages(tmp_path / "st", 3)
    out = tmp_path / "out"
    real = writers.kitti.calib_text
    calls = {"n": 0}

    def crash_on_second(camera):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # a kill in the middle of image 000001
        return real(camera)

    monkeypatch.setattr(writers.kitti, "calib_text", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(stages, out, FakeRenderer())
    assert (out / "labels/000000.json").exists() and not (out / "labels/000001.json").exists()
    assert (out / "images/000001.png").exists()  # partial image: files without a fragment
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))  # atomic writes leave no temp files
    assert not (out / "labels.json").exists()
    monkeypatch.setattr(writers.kitti, "calib_text", real)
    fake = FakeRenderer()
    rep = run(stages, out, fake, batch=8)
    assert fake.calls == [["s001.usda", "s002.usda"]] and rep.skipped == 1
    assert labels.validate_dataset(out)["images"] == 3


def test_bad_stage_is_reported_and_the_rest_render(tmp_path):
    stages = make_stages(tmp_path / "st", 4, bad=(1,))
    out = tmp_path / "out"
    errors = []
    fake = FakeRenderer()
    job = render_job.RenderJob(out_dir=out, width=64, height=48, batch=4)
    rep = render_job.run(stages, job, render_fn=fake, env_of_stage=lambda p: None, progress=False,
                         on_error=lambda s, m: errors.append(m))
    assert not rep.ok and rep.rendered == 3
    assert len(errors) == 1 and "s001.usda" in errors[0] and "no camera" in errors[0] and "\n" not in errors[0]
    data = labels.load_labels(out / "labels.json")
    assert [im["id"] for im in data["images"]] == [0, 2, 3]


def test_same_seed_same_bytes(tmp_path):
    stages = make_stages(tmp_path / "st", 3)
    run(stages, tmp_path / "a", FakeRenderer(), batch=1)
    run(stages, tmp_path / "b", FakeRenderer(), batch=3)
    a = {k: v[1] for k, v in snapshot(tmp_path / "a").items() if not k.startswith("labels/")}
    b = {k: v[1] for k, v in snapshot(tmp_path / "b").items() if not k.startswith("labels/")}
    assert a == b and "labels.json" in a


def test_env_settings_feed_render_options(tmp_path):
    stages = make_stages(tmp_path / "st", 2)
    envs = {"clevr": {"render": {"min_visible_pixels": 200}, "appearance": {"post": {}}},
            "driving": {"render": {"min_visible_pixels": 100}, "appearance": {"post": {"noise_std": [0.0, 0.02]}}}}
    fake = FakeRenderer()
    job = render_job.RenderJob(out_dir=tmp_path / "out", width=64, height=48, batch=8)
    render_job.run(stages, job, render_fn=fake, env_of_stage=lambda p: "clevr" if p.name == "s000.usda" else "driving",
                   load_env=envs.__getitem__, progress=False)
    assert fake.calls == [["s000.usda"], ["s001.usda"]]  # different settings: separate batches
    assert [(o.min_visible_pixels, o.post) for o in fake.options] == [(200, None), (100, PostProcess(noise_std=(0.0, 0.02)))]
    frag = json.loads((tmp_path / "out/labels/000001.json").read_text())
    assert frag["settings"] == {"min_visible_pixels": 100, "post": {"noise_std": [0.0, 0.02]},
                                "min_visible_pixels_at_size": 100}
    with pytest.raises(InputError) as e:
        environment_settings({"render": {"min_visible_pixels": "many"}})
    assert e.value.field == "render.min_visible_pixels"


def test_fragments_record_stage_and_settings(tmp_path):
    stages = make_stages(tmp_path / "st", 1)
    run(stages, tmp_path / "out", FakeRenderer())
    frag = json.loads((tmp_path / "out/labels/000000.json").read_text())
    assert frag["stage"]["path"] == str(stages[0]) and len(frag["stage"]["sha256"]) == 64
    assert frag["config"] == {"width": 64, "height": 48, "ssaa": 1, "shadows": True, "seed": 0, "env": None,
                              "visibility": "area-scaled"}


def test_visibility_threshold_scales_with_image_area():
    """One rule for `sim2sg render` and the loop: CLEVR's 200 px at 480 x 320 is the same share
    of a 96 x 64 image, 200 * 6144 / 153600 = 8 px; at the nominal size it stays 200."""
    from sim2sg.render.settings import render_options
    from sim2sg.scene.environment import load_env

    env = load_env("clevr")
    assert render_options(env, 96, 64).min_visible_pixels == 8
    assert render_options(env, 480, 320).min_visible_pixels == 200
    assert render_options(env, 4, 4).min_visible_pixels == 1
    assert render_options(None, 96, 64).min_visible_pixels == 1
