"""`sim2sg render` through typer's CliRunner, with the renderer replaced by hand-built samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.dataset import coco as labels
from sim2sg.dataset import render_job
from sim2sg.dataset.toy import three_object_sample
from sim2sg.errors import InputError
from sim2sg.render.pipeline import RenderOptions


@pytest.fixture()
def fake_renderer(monkeypatch):
    calls = []

    def render(paths, options, device):
        calls.append(([Path(p).name for p in paths], options, device))
        for p in paths:
            if "BAD" in Path(p).read_text():
                raise InputError(p, "", "stage has no camera")
        return [three_object_sample(Path(p).stem) for p in paths]

    monkeypatch.setattr(render_job, "render_stages", render)
    monkeypatch.setattr(render_job, "_default_env_of_stage", lambda p: None)
    return calls


def stages(tmp_path: Path, n: int, bad=()) -> Path:
    d = tmp_path / "stages"
    d.mkdir()
    for i in range(n):
        (d / f"{i:06d}.usda").write_text(f"#usda 1.0\n# {i} {'BAD' if i in bad else ''}\n")
    return d


def invoke(*args):
    return CliRunner().invoke(app, ["render", *map(str, args)])


def test_render_writes_a_valid_dataset_and_resumes(tmp_path, fake_renderer):
    src, out = stages(tmp_path, 3), tmp_path / "out"
    r = invoke(src, "--out", out, "--size", "64x48", "--device", "cpu", "--batch", "2",
               "--writers", "sg,kitti,clevr", "--ssaa", "2", "--no-shadows", "--seed", "5", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "rendered 3, skipped 0, failed 0 of 3" in r.output
    names, options, device = fake_renderer[0]
    assert names == ["000000.usda", "000001.usda"] and device == "cpu"
    assert options == RenderOptions(width=64, height=48, ssaa=2, shadows=False, seed=5, min_visible_pixels=1, post=None)
    assert labels.validate_dataset(out)["annotations"] == 9
    for f in ("kitti/label_2/000002.txt", "clevr/CLEVR_scenes.json", "scene_graphs/000001.json"):
        assert (out / f).is_file()
    r = invoke(src, "--out", out, "--size", "64x48", "--device", "cpu", "--batch", "2",
               "--writers", "sg,kitti,clevr", "--ssaa", "2", "--no-shadows", "--seed", "5", "--no-progress")
    assert r.exit_code == 0 and "rendered 0, skipped 3" in r.output and len(fake_renderer) == 2


def test_bad_stage_one_line_and_nonzero_exit(tmp_path, fake_renderer):
    src, out = stages(tmp_path, 3, bad=(1,)), tmp_path / "out"
    r = invoke(src, "--out", out, "--size", "64x48", "--device", "cpu", "--no-progress")
    assert r.exit_code == 2
    err = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "000001.usda" in err[0] and "no camera" in err[0]
    assert len(labels.load_labels(out / "labels.json")["images"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--size", "64"], "--size: expected WxH"),
    (["--size", "0x5"], "must be positive"),
    (["--size", "64x48", "--writers", "sg,voc"], "unknown writer 'voc'"),
    (["--size", "64x48", "--device", "tpu"], "unknown device 'tpu'"),
    (["--size", "64x48", "--device", "meta"], "expected auto, cpu, cuda"),
])
def test_bad_arguments(tmp_path, fake_renderer, args, message):
    r = invoke(stages(tmp_path, 1), "--out", tmp_path / "out", *args)
    assert r.exit_code == 2 and message in r.output and fake_renderer == []


def test_missing_source(tmp_path, fake_renderer):
    r = invoke(tmp_path / "nothing", "--out", tmp_path / "out", "--size", "8x8")
    assert r.exit_code == 2 and "error:" in r.output and "no such file" in r.output


@pytest.mark.parametrize("size, ssaa, batch", [("64x48", 1, 16), ("1024x1024", 1, 4), ("1024x1024", 2, 1),
                                               ("64x64", 64, 1)])
def test_default_batch_shrinks_for_large_images(tmp_path, monkeypatch, size, ssaa, batch):
    """Found by fuzzing: --size 64x64 --ssaa 64 (4096x4096 rendered, within the size limit) was
    killed for memory on the CPU: the default batch of 16 wanted ~130 GB."""
    seen = []

    def run(stage_paths, job, **kw):
        seen.append(job.batch)
        raise InputError("stop", "", "captured")

    monkeypatch.setattr(render_job, "run", run)
    r = invoke(stages(tmp_path, 2), "--out", tmp_path / "out", "--size", size, "--ssaa", ssaa, "--device", "cpu")
    assert seen == [batch], r.output
    assert render_job.default_batch("cuda", 1024, 1024) == 16 and render_job.default_batch("cuda", 64, 64) == 256
