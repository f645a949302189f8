"""The target images' own camera (`sim2sg loop --target-camera`): calibration files, checks against
the images, and the lift with a camera, size and aspect other than the environment's."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.errors import InputError
from sim2sg.loop.config import LoopConfig
from sim2sg.loop.lift import lift_graph
from sim2sg.loop.synthesis import target_camera, target_cameras
from sim2sg.render.settings import render_options
from sim2sg.scene import graph as sg
from sim2sg.scene.calib import camera_at
from sim2sg.scene.calib import target_cameras as read_cameras
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scenes

ENV = load_env("clevr")
NOMINAL = target_camera(ENV, 480, 320)
MOUNT = {"height": 7.0, "pitch_deg": 38.0}  # the nominal clevr camera: 4.96 m, ~26 deg


def _png(path, w, h):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))
    return path


def test_json_intrinsics_and_mount(tmp_path):
    f = tmp_path / "cam.json"
    f.write_text(json.dumps({"K": [[100, 0, 47], [0, 90, 33], [0, 0, 1]], "mount": {**MOUNT, "roll_deg": 0}}))
    cam = camera_at(f, (96, 64), NOMINAL)
    assert (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy) == (96, 64, 100, 90, 47, 33)
    assert cam.position == pytest.approx((NOMINAL.position[0], NOMINAL.position[1], 7.0))
    fwd = cam.rotation()[2]
    assert math.degrees(math.asin(-fwd[2])) == pytest.approx(38.0)
    h0 = np.subtract(NOMINAL.look_at, NOMINAL.position)[:2]
    assert fwd[0] * h0[1] - fwd[1] * h0[0] == pytest.approx(0, abs=1e-9) and fwd[:2] @ h0 > 0  # nominal heading
    # roll: the optical axis stays, the image turns
    f.write_text(json.dumps({"hfov_deg": 90, "width": 96, "height": 64, "mount": {**MOUNT, "roll_deg": 10}}))
    rolled = camera_at(f, (96, 64), NOMINAL)
    assert rolled.fx == pytest.approx(48.0) and rolled.orientation is not None
    assert rolled.rotation()[2] == pytest.approx(fwd)
    assert math.degrees(math.acos(rolled.rotation()[0] @ cam.rotation()[0])) == pytest.approx(10.0)


def test_kitti_calib_colmap_and_per_image_folder(tmp_path):
    kitti = tmp_path / "calib.txt"
    kitti.write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\nP2: 721.5 0 609.6 44.9 0 721.5 172.9 0.2 0 0 1 0.003\n")
    cam = camera_at(kitti, (1242, 375), NOMINAL)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (721.5, 721.5, 609.6, 172.9)
    assert cam.position == NOMINAL.position  # intrinsics only: the nominal pose
    colmap = tmp_path / "cameras.txt"
    colmap.write_text("# Camera list\n1 OPENCV 640 480 500 510 320 240 0.1 0 0 0\n")
    cam = camera_at(colmap, (640, 480), NOMINAL)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (500, 510, 320, 240)
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"intrinsics": "cameras.txt", "mount": MOUNT}))
    assert camera_at(both, (640, 480), NOMINAL).position[2] == 7.0
    # one file per image, found by stem
    images = [_png(tmp_path / "img" / "a.png", 640, 480), _png(tmp_path / "img" / "b.png", 1242, 375)]
    folder = tmp_path / "cams"
    folder.mkdir()
    (folder / "a.json").write_text(both.read_text().replace("cameras.txt", "../cameras.txt"))
    (folder / "b.txt").write_text(kitti.read_text())
    a, b = read_cameras(folder, images, NOMINAL)
    assert (a.width, b.width, a.fx, b.fx) == (640, 1242, 500, 721.5)


@pytest.mark.parametrize("text, name, size, field, words", [
    ("1 PINHOLE 640 480 500 500 320 240\n", "cameras.txt", (320, 240), "camera 1", "640x480"),
    ('{"fx": 50, "fy": 50, "cx": 48, "cy": 32, "width": 96, "height": 64}', "c.json", (64, 64), "width", "96x64"),
    ("P2: 721.5 0 609.6 0 0 721.5 172.9 0 0 0 1 0\n", "calib.txt", (320, 160), "P2", "principal point"),
    ("1 OPENCV_FISHEYE 640 480 1 2 3 4 5 6 7 8\n", "cameras.txt", (640, 480), "camera 1.model", "fisheye"),
    ('{"hfov_deg": 60}', "c.json", (96, 64), "hfov_deg", "width and height"),
    ('{"fx": 50, "fy": 50, "cx": 48, "cy": 32, "mount": {"height": -1}}', "c.json", (96, 64), "mount.height", "> 0"),
    # focal lengths no camera has: the image would see nothing (1e308) or run to infinity (1e-300)
    ('{"fx": 1e308, "fy": 1e308, "cx": 48, "cy": 32}', "c.json", (96, 64), "fx", "field of view"),
    ('{"fx": 1e-300, "fy": 50, "cx": 48, "cy": 32}', "c.json", (96, 64), "fx", "field of view"),
    ('{"hfov_deg": 179.9, "width": 96, "height": 64}', "c.json", (96, 64), "hfov_deg", "[0.01, 179.0]"),
    ("1 PINHOLE 96 64 0.001 0.001 48 32\n", "cameras.txt", (96, 64), "camera 1", "field of view"),
])
def test_images_that_disagree_with_the_calibration_are_refused(tmp_path, text, name, size, field, words):
    f = tmp_path / name
    f.write_text(text)
    image = _png(tmp_path / "img" / "000000.png", *size)
    with pytest.raises(InputError) as e:
        read_cameras(f, [image], NOMINAL)
    assert e.value.source == str(f) and e.value.field == field
    assert words in str(e.value) if words != "fisheye" else "pinhole models only" in str(e.value)


@pytest.mark.parametrize("calib, field, words", [
    ({"near": 10, "far": 1}, "near", "0 < near < far"),
    ({"near": -1}, "near", "0 < near < far"),
    ({"position": [1e308, 0, 2], "look_at": [-1e308, 0, 0]}, "look_at", "finite distance"),
    ({"nera": 0.5}, "nera", "unknown field"),
    ({"mount": {"height": 2, "pitch": 10}}, "mount.pitch", "unknown field"),
    ({"intrinsics": "img/000000.png"}, "intrinsics", "cannot read")])
def test_calibration_values_that_gave_a_wrong_camera_or_a_traceback(tmp_path, calib, field, words):
    """Found by fuzzing: near/far were taken as they came (a camera clipping everything), a pose a
    distance of inf apart gave NaN axes, a misspelt field fell back to the nominal value silently,
    and an "intrinsics" file that is not text raised UnicodeDecodeError."""
    image = _png(tmp_path / "img" / "000000.png", 64, 64)
    f = tmp_path / "c.json"
    f.write_text(json.dumps(({} if "intrinsics" in calib else {"fx": 50, "fy": 50, "cx": 32, "cy": 32}) | calib))
    with pytest.raises(InputError) as e:
        read_cameras(f, [image], NOMINAL)
    assert e.value.source == str(f) and e.value.field == field and words in str(e.value)


def test_missing_per_image_calibration_is_named(tmp_path):
    (tmp_path / "cams").mkdir()
    with pytest.raises(InputError, match="000000.json or 000000.txt"):
        read_cameras(tmp_path / "cams", [_png(tmp_path / "000000.png", 8, 8)], NOMINAL)


def test_the_lift_with_the_target_camera_places_objects_of_a_non_nominal_view(tmp_path):
    """Target images rendered by sim2sg with another camera, size (96x64) and aspect than the
    environment's; the loop trains at 64x64, so images and camera are both squeezed per axis."""
    cam_file = tmp_path / "cam.json"
    cam_file.write_text(json.dumps({"hfov_deg": 55, "width": 96, "height": 64, "mount": MOUNT}))
    true_cam = camera_at(cam_file, (96, 64), NOMINAL)
    graphs = [g.copy() for g in sample_scenes(ENV, seed=3, count=3)]
    for g in graphs:
        g.graph["camera"] = true_cam
    samples = synthesize(graphs, [f"{i:06d}" for i in range(3)], ENV, render_options(ENV, 96, 64), "cpu",
                         np.random.default_rng(0), texture_library(tmp_path))
    files = []
    for s in samples:
        files.append(tmp_path / "images" / f"{s.name}.png")
        files[-1].parent.mkdir(exist_ok=True)
        cv2.imwrite(str(files[-1]), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
    cfg = LoopConfig(env="clevr", target=str(tmp_path / "images"), out="", width=64, height=64,
                     target_camera=str(cam_file))
    cams = target_cameras(ENV, cfg, files)
    assert [(c.width, c.height) for c in cams] == [(64, 64)] * 3 and cams[0].fx == pytest.approx(true_cam.fx * 64 / 96)
    errors = {"target": [], "nominal": []}
    for s, g, cam in zip(samples, graphs, cams):
        for which, c in (("target", cam), ("nominal", target_camera(ENV, 64, 64))):
            pred = sg.new_graph("clevr", c, {})
            sx = 64 / 96
            for o in s.objects:  # the true visible boxes, squeezed to the training size
                x1, y1, x2, y2 = o.box
                sg.add_object(pred, o.object_id, o.category, (0, 0, 0), 0, (1, 1, 1),
                              box=(x1 * sx, y1, x2 * sx, y2), score=0.9)
            lifted = lift_graph(pred, ENV, c, np.random.default_rng(0), min_fit_iou=0.0)
            for o in s.objects:
                b = (o.box[0] * sx, o.box[1], o.box[2] * sx, o.box[3])
                hit = [a for _, a in sg.objects(lifted) if np.allclose(a["box"], b, atol=1e-3)]
                if hit:
                    errors[which].append(math.dist(hit[0]["position"][:2], g.nodes[o.object_id]["position"][:2]))
    assert len(errors["target"]) >= 8
    assert np.median(errors["target"]) < 0.3  # meters; CLEVR objects are 0.7-1.4 m wide
    assert np.median(errors["nominal"]) > 3 * np.median(errors["target"])


def _loop_target(tmp_path, size=(64, 48)):
    """Two target images rendered with a non-nominal camera (`cam.json`) at `size`, their true visible
    graphs beside them."""
    from sim2sg.dataset.writers import visible_graph

    cam_file = tmp_path / "cam.json"
    cam_file.write_text(json.dumps({"hfov_deg": 55, "width": size[0], "height": size[1], "mount": MOUNT}))
    true_cam = camera_at(cam_file, size, NOMINAL)
    graphs = [g.copy() for g in sample_scenes(ENV, seed=3, count=2)]
    for g in graphs:
        g.graph["camera"] = true_cam
    for s in synthesize(graphs, ["000000", "000001"], ENV, render_options(ENV, *size), "cpu",
                        np.random.default_rng(0), texture_library(tmp_path)):
        (tmp_path / "images").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / f"{s.name}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        sg.write_graph(tmp_path / "graphs" / f"{s.name}.json", visible_graph(s))
    return cam_file, true_cam


def test_loop_cli_lifts_and_renders_with_the_target_camera(tmp_path):
    """`sim2sg loop --target-camera`: every scene generated from a target image is seen by that
    image's camera squeezed to the training size (its kept stage too), and the history's placement
    error pairs it with the image's true graph."""
    import gzip

    import torch
    from sim2sg.cli.app import app
    from typer.testing import CliRunner

    from sim2sg.usd.read import load_scene

    torch.set_num_threads(1)
    cam_file, true_cam = _loop_target(tmp_path)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [
        "loop", "--env", "clevr", "--target", str(tmp_path / "images"), "--target-camera", str(cam_file),
        "--target-graphs", str(tmp_path / "graphs"), "--out", str(out), "--model", "fast", "--size", "64x64",
        "--sdr-scenes", "2", "--sdr-steps", "1", "--iter-steps", "1", "--loop", "1", "--align", "label",
        "--batch", "2", "--score-thresh", "0", "--min-fit-iou", "0", "--keep-usd", "--device", "cpu",
        "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in gzip.decompress((out / "graphs" / "iter1.jsonl.gz").read_bytes()).splitlines()]
    lifted = [row for row in rows if row["lifted"]]
    assert lifted, "an untrained network with score threshold 0 detects something to lift"
    want = true_cam.resized(64, 64)
    for row in lifted:
        cam = sg.from_dict(row["generated"], "graph").graph["camera"]
        assert (cam.width, cam.height, cam.position) == (64, 64, pytest.approx(want.position))
        assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx((want.fx, want.fy, want.cx, want.cy))
        stage = load_scene(out / "usd" / "iter1" / f"it1_{row['target']:06d}_0.usdc", 64, 64)
        assert (stage.camera.fx, stage.camera.fy) == pytest.approx((want.fx, want.fy), rel=1e-5)
        np.testing.assert_allclose(stage.camera.project(np.zeros((1, 3)))[0], want.project(np.zeros((1, 3)))[0],
                                   atol=1e-3)
    history = json.loads((out / "history.json").read_text())
    place = history["phases"][1]["placement"]
    assert place["lifted"] == sum(len(row["generated"]["objects"]) for row in lifted) > 0


def test_loop_cli_refuses_images_that_disagree_with_the_calibration(tmp_path):
    from sim2sg.cli.app import app
    from typer.testing import CliRunner

    cam_file = tmp_path / "cam.json"
    cam_file.write_text(json.dumps({"hfov_deg": 55, "width": 80, "height": 48, "mount": MOUNT}))
    _png(tmp_path / "images" / "000000.png", 64, 48)
    r = CliRunner().invoke(app, ["loop", "--env", "clevr", "--target", str(tmp_path / "images"), "--target-camera",
                                 str(cam_file), "--out", str(tmp_path / "run"), "--model", "fast", "--size", "64x64",
                                 "--sdr-scenes", "1", "--sdr-steps", "1", "--loop", "1", "--device", "cpu",
                                 "--no-progress"])
    assert r.exit_code == 2
    (line,) = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert str(cam_file) in line and "000000.png" in line and "Traceback" not in r.output
