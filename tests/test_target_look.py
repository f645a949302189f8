"""Target looks: textures cropped from target images for the synthesis step."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.loop.synthesis import target_camera
from sim2sg.loop.target_look import (
    TargetLook,
    ground_patch,
    ground_quad,
    object_crop,
    write_target_look,
)
from sim2sg.render.settings import render_options
from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.look import Surface, apply_target_look, randomize_look
from sim2sg.scene.meshes import context_uv_scale
from sim2sg.scene.sdr import sample_scene, scene_rng


def test_object_crop_keeps_the_inside_of_the_box():
    img = np.zeros((100, 100, 3), np.uint8)
    img[20:60, 30:90] = (200, 10, 10)  # the object; its surroundings are black
    crop = object_crop(img, (30, 20, 90, 60))
    assert crop.shape == (48, 48, 3)
    assert (crop == (200, 10, 10)).all()  # the inset drops every background pixel
    assert object_crop(img, (30, 20, 34, 25)) is None  # under 4 px once inset


def _ground_image(cam):
    """An image of the ground z = 0 whose red channel is 100 + 20 x and green 100 + 20 y (world m)."""
    v, u = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    d = cam.pixel_rays(np.stack([u.ravel(), v.ravel()], 1))
    eye = np.asarray(cam.position)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -eye[2] / d[:, 2]
    p = eye + d * t[:, None]
    img = np.zeros((cam.height * cam.width, 3))
    img[:, 0] = 100 + 20 * p[:, 0]
    img[:, 1] = 100 + 20 * p[:, 1]
    img[d[:, 2] >= 0] = 0
    return np.clip(img, 0, 255).round().astype(np.uint8).reshape(cam.height, cam.width, 3)


def test_ground_patch_is_rectified_metric_and_oriented():
    cam = target_camera(load_env("clevr"), 256, 256)
    img = _ground_image(cam)
    tex, side = ground_patch(img, cam, np.zeros((0, 4)), np.random.default_rng(0), size=64)
    assert tex.shape == (64, 64, 3)
    r, g = tex[..., 0].astype(float), tex[..., 1].astype(float)
    # u (columns) runs along world +X, v along +Y with row 0 at v = 1 (the top): red grows to the
    # right by 20 per meter over one side; green grows upwards; each is constant the other way.
    assert r[32, -2] - r[32, 1] == pytest.approx(20 * side * 61 / 64, abs=2.0)
    assert g[1, 32] - g[-2, 32] == pytest.approx(20 * side * 61 / 64, abs=2.0)
    assert np.ptp(r[:, 32]) <= 2 and np.ptp(g[32, :]) <= 2
    # The patch spans about a fifth of the image: side = 0.2 * 256 * depth / fx at its centre.
    assert 0.05 < side < 2.0


def test_ground_quad_corners_project_the_world_square():
    cam = target_camera(load_env("clevr"), 256, 256)
    q = ground_quad(cam, np.array([0.0, 0.0, 0.0]), 1.0)
    uv, _ = cam.project(np.array([[-0.5, 0.5, 0], [0.5, 0.5, 0], [0.5, -0.5, 0], [-0.5, -0.5, 0]]))
    assert np.allclose(q, uv)


def test_ground_patch_avoids_detections():
    cam = target_camera(load_env("clevr"), 256, 256)
    img = _ground_image(cam)
    img[:, :128] = (0, 0, 255)  # a detected object covers the left half (blue)
    boxes = np.array([[0.0, 0.0, 128.0, 256.0]])
    for seed in range(5):
        tex, _ = ground_patch(img, cam, boxes, np.random.default_rng(seed))
        assert (tex[..., 2] < 50).all()  # nothing of the object
    # With every pixel covered the least covered square is still taken.
    assert ground_patch(img, cam, np.array([[0.0, 0.0, 256.0, 256.0]]), np.random.default_rng(0)) is not None


def test_apply_target_look_replaces_only_listed_surfaces():
    env = load_env("clevr")
    g = sample_scene(env, scene_rng(0, 0))
    look = randomize_look(g, env, np.random.default_rng(0))
    ids = sorted(look.objects)
    tl = TargetLook({ids[0]: "target/a_o0"}, {"ground": ("target/a_ground", 2.5)})
    new = apply_target_look(look, tl)
    assert new.objects[ids[0]] == dataclasses.replace(look.objects[ids[0]], color=(1.0, 1.0, 1.0),
                                                      texture="target/a_o0")
    assert all(new.objects[i] == look.objects[i] for i in ids[1:])
    assert new.context["ground"].texture == "target/a_ground" and new.context["ground"].uv_scale == 2.5
    assert new.lights == look.lights and apply_target_look(look, None) is look
    assert isinstance(new.objects[ids[0]], Surface)


def test_synthesized_object_shows_its_target_crop(tmp_path):
    """A lifted object textured with a pure colour crop renders in that colour; the generated
    scene's labels are those of the same scene without target looks."""
    env = load_env("clevr")
    cam = target_camera(env, 128, 128)
    g = sg.new_graph(env.name, cam, {"kind": "ground", "extent": 40.0})
    sg.add_object(g, 0, "cube", (0.0, 0.0, 0.7), 0.0, (1.4, 1.4, 1.4), box=(40.0, 40.0, 90.0, 90.0))
    img = np.zeros((128, 128, 3), np.uint8)
    img[:] = (40, 200, 40)  # ground: green
    img[40:90, 40:90] = (220, 20, 20)  # the object's box: red
    tex = texture_library(tmp_path)
    look = write_target_look(img, g, cam, np.array([[40.0, 40.0, 90.0, 90.0]]), np.random.default_rng(0), tex,
                             "target/t")
    assert set(look.objects) == {0} and (tex / "target" / "t_o0.png").is_file()
    opts = render_options(env, 128, 128)
    plain, = synthesize([g], ["p"], env, opts, "cpu", np.random.default_rng(3), tex, workers=0)
    dressed, = synthesize([g], ["d"], env, opts, "cpu", np.random.default_rng(3), tex, workers=0, target_looks=[look])
    m = dressed.instance == dressed.objects[0].instance_id
    assert np.array_equal(m, plain.instance == plain.objects[0].instance_id)
    assert [o.box for o in dressed.objects] == [o.box for o in plain.objects]
    obj = dressed.image[m].astype(float).mean(0)
    assert obj[0] > 2 * obj[1] and obj[0] > 2 * obj[2]  # red
    assert "ground" in look.context
    ground = dressed.image[dressed.instance == 0].astype(float).mean(0)
    assert ground[1] > 1.5 * ground[0] and ground[1] > 1.5 * ground[2]  # green
    assert context_uv_scale("ground", "ground") == 0.25


def _target_images(folder):
    """Two 64x64 clevr-target images written to `folder` (unlabelled target images for a loop)."""
    import cv2

    env = load_env("clevr-target")
    graphs = [sample_scene(env, scene_rng(5, i)) for i in range(2)]
    samples = synthesize(graphs, ["a", "b"], env, render_options(env, 64, 64), "cpu", np.random.default_rng(0),
                         texture_library(folder.parent / "t"))
    folder.mkdir()
    for s in samples:
        cv2.imwrite(str(folder / f"{s.name}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))


def test_loop_with_target_textures_writes_stages_that_use_them(tmp_path):
    """The synthesis step with target textures: kept stages reference crops that exist."""
    from pxr import Usd, UsdShade

    from sim2sg.loop.config import LoopConfig
    from sim2sg.loop.run import run

    torch.set_num_threads(1)
    _target_images(tmp_path / "images")
    cfg = dict(env="clevr", target=str(tmp_path / "images"), align="label", iterations=1, sdr_scenes=2,
               width=64, height=64, sdr_steps=1, iter_steps=1, batch_size=2, lr_warmup_steps=1,
               score_threshold=0.0, progress=False, target_textures=True)
    run(LoopConfig(out=str(tmp_path / "kept"), keep_usd=True, **cfg), log=lambda m: None)
    files = set()
    for stage_path in sorted((tmp_path / "kept" / "usd" / "iter1").glob("*.usdc")):
        stage = Usd.Stage.Open(str(stage_path))
        for prim in stage.Traverse():
            if prim.IsA(UsdShade.Shader) and prim.GetAttribute("inputs:file"):
                files.add(prim.GetAttribute("inputs:file").Get().path)
    crops = [f for f in files if "/target/it1/" in f]
    assert crops and all(Path(f).is_file() for f in crops)
    # Without kept stages the crops are removed once the iteration's scenes are rendered.
    run(LoopConfig(out=str(tmp_path / "plain"), **cfg), log=lambda m: None)
    assert not (tmp_path / "plain" / "textures" / "target" / "it1").exists()


def test_train_cli_passes_the_loop_options(tmp_path):
    """`sim2sg loop --env ... --target-textures --keep-sdr --target-bn` runs the loop with them."""
    import json

    from sim2sg.cli.app import app
    from typer.testing import CliRunner

    torch.set_num_threads(1)
    _target_images(tmp_path / "images")
    r = CliRunner().invoke(app, [
        "loop", "--env", "clevr", "--target", str(tmp_path / "images"), "--out", str(tmp_path / "run"),
        "--loop", "1", "--align", "label", "--size", "64x64", "--sdr-scenes", "2", "--sdr-steps", "1",
        "--iter-steps", "1", "--batch", "2", "--score-thresh", "0", "--device", "cpu", "--no-progress",
        "--target-textures", "--keep-sdr", "--target-bn"])
    assert r.exit_code == 0, r.output
    h = json.loads((tmp_path / "run" / "history.json").read_text())
    assert h["config"]["target_textures"] and h["config"]["keep_sdr"] and h["config"]["target_bn"]
    assert h["phases"][1]["lifted"] == 2


def test_generated_scenes_do_not_depend_on_worker_processes(tmp_path):
    """Lifting and cropping in forked workers gives the graphs, looks and crop files of doing it here."""
    from sim2sg.loop.config import LoopConfig
    from sim2sg.loop.synthesis import generate_scenes
    from sim2sg.train.predict import graph_from_prediction

    tenv, senv = load_env("clevr-target"), load_env("clevr")
    cam = target_camera(senv, 128, 128)
    graphs = [sample_scene(tenv, scene_rng(9, i)) for i in range(16)]
    for g in graphs:
        g.graph["camera"] = target_camera(tenv, 128, 128)
    samples = synthesize(graphs, [str(i) for i in range(16)], tenv, render_options(tenv, 128, 128), "cpu",
                         np.random.default_rng(0), texture_library(tmp_path / "t"), workers=0)
    jobs = []
    for k, s in enumerate(samples):
        boxes = np.array([o.box for o in s.objects], dtype=np.float32).reshape(-1, 4)
        out = {"boxes": torch.from_numpy(boxes), "scores": torch.ones(len(boxes)),
               "labels": torch.tensor([senv.categories.index(o.category) + 1 for o in s.objects])}
        pred = graph_from_prediction(out, senv.categories, senv.predicates, cam, senv.name, rel_thresh=None)
        jobs.append((k, 0, pred, s.image, boxes, 1000 + k))
    cfg = LoopConfig(env="clevr", target="", out="")
    here = generate_scenes(jobs, senv, cam, cfg, 1, tmp_path / "a", workers=0)
    forked = generate_scenes(jobs, senv, cam, cfg, 1, tmp_path / "b", workers=2)
    assert [sg.to_json(g) for g, _, _ in here] == [sg.to_json(g) for g, _, _ in forked]
    assert [(lk, src) for _, lk, src in here] == [(lk, src) for _, lk, src in forked]
    assert all(src == k for k, (_, _, src) in enumerate(here)) and all(lk.objects for _, lk, _ in here)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
