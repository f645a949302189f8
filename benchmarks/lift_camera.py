"""Lift placement error with the environment's nominal camera vs a user's camera (`--target-camera`).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/lift_camera.py --scenes 60 --train-size 256x256

For each environment, SDR scenes are rendered as target images twice: (a) with the nominal camera
at the environment's image size (what the loop assumed before `--target-camera`), and (b) with
another camera (1.3x the height, 8 degrees more pitch, another field of view) at another size and
aspect, described by a camera JSON file (`sim2sg.scene.calib`). As in the loop, the images are
resized to the training size, so the true visible boxes (the renderer's labels: what a perfect
detector would give, occlusion included) are squeezed per axis to it, and the camera is resized the
same way (`sim2sg.loop.synthesis.target_cameras`). Each box is lifted (`sim2sg.loop.lift`), and
the placement error is the ground distance (m) between a lifted object and the true object whose
box it came from. Row (c) lifts the non-nominal images with the nominal camera: the error the loop
made on such a target before.

Reports per environment and case: objects lifted / visible, median and mean error (m).
Acceptance (issue 23): (b) within 10% of (a).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.loop.lift import lift_graph
from sim2sg.loop.synthesis import target_camera
from sim2sg.render.settings import render_options
from sim2sg.scene import graph as sg
from sim2sg.scene.calib import camera_at
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scenes

# Non-nominal target cameras: (image size, hfov degrees, height factor, extra pitch degrees).
OTHER = {"clevr": ((400, 300), 55.0, 1.3, 8.0), "dining": ((480, 270), 70.0, 1.3, 8.0),
         "driving": ((960, 540), 70.0, 1.3, 3.0)}


def pitch_deg(cam) -> float:
    fwd = np.subtract(cam.look_at, cam.position)
    return math.degrees(math.atan2(-fwd[2], np.linalg.norm(fwd[:2])))


def errors(env, true_cam, lift_cam_at_train, size, train, n, seed, tex) -> tuple[list[float], int]:
    """Placement errors (m) of the lifted true boxes of `n` scenes rendered with `true_cam` at `size`."""
    graphs = [g.copy() for g in sample_scenes(env, seed=seed, count=n)]
    for g in graphs:
        g.graph["camera"] = true_cam
    samples = synthesize(graphs, [f"{i:06d}" for i in range(n)], env, render_options(env, *size), "cpu",
                         np.random.default_rng(seed), tex, workers=0)
    sx, sy = train[0] / size[0], train[1] / size[1]
    out, visible = [], 0
    for k, (s, g) in enumerate(zip(samples, graphs)):
        pred = sg.new_graph(env.name, lift_cam_at_train, {})
        boxes = {}
        for o in s.objects:
            b = (o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy)
            boxes[o.object_id] = b
            sg.add_object(pred, o.object_id, o.category, (0, 0, 0), 0, (1, 1, 1), box=b, score=0.9)
        visible += len(s.objects)
        lifted = lift_graph(pred, env, lift_cam_at_train, np.random.default_rng([seed, k]))
        for oid, b in boxes.items():
            hit = [a for _, a in sg.objects(lifted) if np.allclose(a["box"], b, atol=1e-3)]
            if hit:
                out.append(math.dist(hit[0]["position"][:2], g.nodes[oid]["position"][:2]))
    return out, visible


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", default="clevr,dining,driving")
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--train-size", default="256x256")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    train = tuple(int(v) for v in args.train_size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tex = texture_library(tmp)
        for name in args.envs.split(","):
            env = load_env(name)
            nominal = target_camera(env, env.camera.width, env.camera.height)
            size, hfov, hf, dp = OTHER[name]
            cam_file = tmp / f"{name}.json"
            cam_file.write_text(json.dumps({"hfov_deg": hfov, "width": size[0], "height": size[1],
                                            "mount": {"height": nominal.position[2] * hf,
                                                      "pitch_deg": pitch_deg(nominal) + dp}}))
            other = camera_at(cam_file, size, nominal)
            cases = [("a nominal camera, nominal size", nominal, nominal, (nominal.width, nominal.height)),
                     (f"b --target-camera, {size[0]}x{size[1]}", other, other, size),
                     ("c same images, nominal camera", other, nominal.resized(*size), size)]
            for label, true_cam, lift_cam, sz in cases:
                e, vis = errors(env, true_cam, lift_cam.resized(*train), sz, train, args.scenes, args.seed, tex)
                rows.append((name, label, len(e), vis, float(np.median(e)), float(np.mean(e))))
                print(f"{name:8s} {label:34s} lifted {len(e):4d}/{vis:4d}  median {rows[-1][4]:.3f} m  "
                      f"mean {rows[-1][5]:.3f} m", flush=True)
    print("\n| env | case | lifted / visible | median error (m) | mean error (m) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} / {r[3]} | {r[4]:.3f} | {r[5]:.3f} |")


if __name__ == "__main__":
    main()
