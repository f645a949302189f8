"""`sim2sg render --ray`: shards rendered as Ray tasks on a local cluster write the dataset of a
single-process render, byte for byte; a partly rendered dataset is resumed; bad stages are
reported; a shard that keeps failing stops the job before labels.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray  # the test extra installs it: this test must run, not skip

from sim2sg.dataset import render_job, shards
from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scene, scene_rng
from sim2sg.usd.compile import graph2usd

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shard_ranges_cover_every_image_once():
    assert shards.shard_ranges(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert shards.shard_ranges(0, 4) == []
    assert shards.default_shard_size(1000, 16, 2) % 16 == 0


def test_addresses():
    assert shards.check_address("local") is None and shards.check_address("auto") == "auto"
    assert shards.check_address("ray://head:10001") == "ray://head:10001"
    with pytest.raises(Exception, match="expected local, auto"):
        shards.check_address("stages")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    root = tmp_path_factory.mktemp("clevr")
    env = load_env("clevr")
    files = []
    for i in range(4):
        files.append(root / "graphs" / f"{i:06d}.json")
        sg.write_graph(files[-1], sample_scene(env, scene_rng(0, i)))
    graph2usd(files, root / "usd", seed=0)
    return render_job.discover_stages(root / "usd")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def job(out: Path, **kw) -> render_job.RenderJob:
    # not kitti: at 48x32 some image has no KITTI object, and its empty label_2 file makes
    # `render_job`'s resume check take the image for unfinished (every run re-renders it)
    return render_job.RenderJob(out_dir=out, width=48, height=32, writers=("coco", "sg", "clevr"), batch=4, **kw)


def test_sharded_render_is_the_plain_render_byte_for_byte(cluster, stages, tmp_path):
    plain = render_job.run(stages, job(tmp_path / "plain"), progress=False)
    assert plain.rendered == 4 and plain.ok
    # one image per shard: batches differ from the plain render's single batch of 4
    rep = shards.render_on_ray(stages, job(tmp_path / "ray"), shard_size=1, progress=False)
    assert (rep.total, rep.rendered, rep.skipped, rep.failures) == (4, 4, 0, ())
    a, b = tree(tmp_path / "plain"), tree(tmp_path / "ray")
    assert len(a) > 4 * 5 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_resume_and_failures(cluster, stages, tmp_path):
    out = tmp_path / "out"
    # a driver killed after images 0 and 1: their fragments are kept, the rest is rendered
    render_job.run(stages, job(out), shard=range(0, 2), progress=False)
    assert not (out / "labels.json").exists()
    bad = tmp_path / "000009_bad.usda"
    bad.write_text("#usda 1.0\n")  # no camera: the renderer refuses it
    errors = []
    rep = shards.render_on_ray([*stages, bad], job(out), shard_size=2,
                               on_error=lambda s, m: errors.append(s), progress=False)
    assert (rep.total, rep.rendered, rep.skipped) == (5, 2, 2)
    assert [f for f, _ in rep.failures] == [str(bad)] and errors == [str(bad)]
    assert len(json.loads((out / "labels.json").read_text())["images"]) == 4


def test_a_shard_that_keeps_failing_stops_before_labels(cluster, stages, tmp_path):
    out = tmp_path / "not_a_folder"
    out.write_text("a file where the dataset folder should be\n")
    with pytest.raises(shards.ShardError, match="failed on Ray after 0 retries"):
        shards.render_on_ray(stages, job(out), max_retries=0, progress=False)
