"""Lift placement error with the environment's nominal camera vs a user's camera (`--target-camera`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lift_camera.py --scenes 200
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lift_camera.py --scenes 0 --loop clevr

**True boxes** (default). For each environment, SDR scenes are rendered as target images (a) with
the nominal camera at the environment's image size, (b) with another camera (1.3x the height, more
pitch, another field of view) at another size and aspect, described by a camera JSON file
(`sim2sg.scene.calib`), (c) the images of b lifted with the nominal camera (what the loop did
before `--target-camera`), and (d) b's camera at a size scaled so that its median ground sampling
distance equals a's. The renderer's true visible boxes (a perfect detector, occlusion included)
are lifted (`sim2sg.loop.lift`) with the camera resized to the training size, boxes squeezed the
same way (as in the loop; the lift is invariant to that resize). The placement error is the ground
distance (m) between a lifted object and the true object whose box it came from.

GSD (ground sampling distance): at each true object's ground point, the ground distance (cm)
between the rays of the pixels half a pixel above and below its image (the image's own size): how
far one pixel of box bottom moves the lift along the line of sight. Error / GSD is the error in
pixels of box bottom. A camera that sees the scene at fewer pixels per metre lifts with a larger
metric error for the same pixel error; rows b and d separate that from the camera itself.

Ratios b/a and d/a (median and mean error) come with a 95% paired bootstrap interval over scenes
(the same scene graphs are rendered in every case).

**Loop** (`--loop ENV`): target images of `--targets` SDR scenes (seed 1000 + ...) are rendered
with the nominal camera and with b's camera, each written with its true visible graphs; then
`sim2sg loop --model fast --align label` (CPU, `--size`, short SDR and iteration phases; both runs
start from one SDR phase) runs on each with `--target-graphs` (and `--target-camera` for b), and
the table gives the history's `placement` figure per iteration: predicted objects matched to a true object (same class, box IoU >= 0.5),
and the ground distance from each lifted object to its match (`sim2sg.eval.content.placement_error`).

The loop's ratios b / a come with a 95% bootstrap interval over target images (the same scene
graphs are the targets of both runs). Acceptance (issue 23): b within 10% of a.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.dataset.writers import visible_graph
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


def other_camera(env, tmp: Path) -> tuple:
    """(nominal camera, b's camera, b's camera file, b's size) of environment `env`."""
    nominal = target_camera(env, env.camera.width, env.camera.height)
    size, hfov, hf, dp = OTHER[env.name]
    cam_file = tmp / f"{env.name}_camera.json"
    cam_file.write_text(json.dumps({"hfov_deg": hfov, "width": size[0], "height": size[1],
                                    "mount": {"height": nominal.position[2] * hf,
                                              "pitch_deg": pitch_deg(nominal) + dp}}))
    return nominal, camera_at(cam_file, size, nominal), cam_file, size


def render(env, graphs, cam, size, seed, tex):
    """Samples of `graphs` seen with camera `cam` at `size` (width, height)."""
    graphs = [g.copy() for g in graphs]
    for g in graphs:
        g.graph["camera"] = cam.resized(*size)
    return synthesize(graphs, [f"{i:06d}" for i in range(len(graphs))], env, render_options(env, *size), "cpu",
                      np.random.default_rng(seed), tex, workers=0)


def gsd_cm(cam, p) -> float:
    """Ground distance (cm) spanned by one pixel of image row at ground point p seen by `cam`."""
    uv, _ = cam.project(np.array([[p[0], p[1], 0.0]]))
    a, b = cam.plane_points(uv + [[0, -0.5]]), cam.plane_points(uv + [[0, 0.5]])
    return float(np.linalg.norm(a[0, :2] - b[0, :2]) * 100) if np.isfinite(a).all() and np.isfinite(b).all() \
        else float("nan")


def scene_errors(env, graphs, true_cam, size, lift_cam, train, seed, tex, chunk: int = 50) -> tuple[list[list], int]:
    """Per scene, [(error m, GSD cm)] of each lifted true box of `graphs` rendered with `true_cam`
    at `size` and lifted with `lift_cam`; and the visible objects in all. Rendered `chunk` scenes
    at a time (a few hundred full-size samples would hold gigabytes)."""
    out, visible = [], 0
    for start in range(0, len(graphs), chunk):
        part = graphs[start:start + chunk]
        o, v = _errors(env, part, render(env, part, true_cam, size, seed + start, tex), true_cam, lift_cam, train,
                       seed, start)
        out, visible = out + o, visible + v
    return out, visible


def _errors(env, graphs, samples, true_cam, lift_cam, train, seed, start) -> tuple[list[list], int]:
    out, visible = [], 0
    for k, (s, g) in enumerate(zip(samples, graphs), start):
        sx, sy = train[0] / s.camera.width, train[1] / s.camera.height
        cam = lift_cam.resized(*train)
        pred = sg.new_graph(env.name, cam, {})
        boxes = {}
        for o in s.objects:
            b = (o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy)
            boxes[o.object_id] = b
            sg.add_object(pred, o.object_id, o.category, (0, 0, 0), 0, (1, 1, 1), box=b, score=0.9)
        visible += len(s.objects)
        lifted = lift_graph(pred, env, cam, np.random.default_rng([seed, k]))
        row = []
        for oid, b in boxes.items():
            hit = [a for _, a in sg.objects(lifted) if np.allclose(a["box"], b, atol=1e-3)]
            if hit:
                p = g.nodes[oid]["position"]
                row.append((math.dist(hit[0]["position"][:2], p[:2]), gsd_cm(true_cam, p)))
        out.append(row)
    return out, visible


def stats(per_scene: list[list]) -> dict:
    e = np.array([x for row in per_scene for x in row], dtype=np.float64).reshape(-1, 2)
    px = e[:, 0] * 100 / e[:, 1]
    return {"n": len(e), "median": float(np.median(e[:, 0])), "mean": float(np.mean(e[:, 0])),
            "gsd": float(np.nanmedian(e[:, 1])), "median_px": float(np.nanmedian(px)), "mean_px": float(np.nanmean(px))}


def paired_ratio_ci(num: list[list], den: list[list], rng: np.random.Generator, n_boot: int = 2000) -> dict:
    """95% bootstrap intervals (resampling scenes, both cases together) of the ratios of the median
    and of the mean error, num / den."""
    n = len(num)
    out = {"median": [], "mean": []}
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        a = np.array([x[0] for i in idx for x in num[i]])
        b = np.array([x[0] for i in idx for x in den[i]])
        out["median"].append(np.median(a) / np.median(b))
        out["mean"].append(np.mean(a) / np.mean(b))
    return {k: tuple(float(q) for q in np.percentile(v, [2.5, 97.5])) for k, v in out.items()}


def true_boxes(args, train, tmp: Path) -> None:
    tex = texture_library(tmp)
    rows = []
    for name in args.envs.split(","):
        env = load_env(name)
        nominal, other, _, size = other_camera(env, tmp)
        graphs = list(sample_scenes(env, seed=args.seed, count=args.scenes))
        t = time.perf_counter()
        nom_size = (nominal.width, nominal.height)
        res = {"a": scene_errors(env, graphs, nominal, nom_size, nominal, train, args.seed, tex),
               "b": scene_errors(env, graphs, other, size, other, train, args.seed, tex)}
        if not args.skip_c:
            res["c"] = scene_errors(env, graphs, other, size, nominal.resized(*size), train, args.seed, tex)
        f = stats(res["b"][0])["gsd"] / stats(res["a"][0])["gsd"]
        size_d = (round(size[0] * f), round(size[1] * f))
        other_d = other.resized(*size_d)
        res["d"] = scene_errors(env, graphs, other_d, size_d, other_d, train, args.seed, tex)
        labels = {"a": f"a, nominal {nom_size[0]}x{nom_size[1]}", "b": f"b, {size[0]}x{size[1]}",
                  "c": "c, b lifted with the nominal camera", "d": f"d, b's camera at {size_d[0]}x{size_d[1]}"}
        rng = np.random.default_rng(args.seed)
        for key, (per_scene, vis) in res.items():
            s = stats(per_scene)
            ci = paired_ratio_ci(per_scene, res["a"][0], rng) if key in ("b", "d") else None
            rows.append((name, labels[key], s, vis, ci))
            print(f"{name:8s} {labels[key]:38s} {s['n']:4d}/{vis:4d}  median {s['median']:.3f}  mean {s['mean']:.3f} m"
                  f"  GSD {s['gsd']:.2f} cm  px {s['median_px']:.2f}/{s['mean_px']:.2f}"
                  + (f"  ratio med {s['median'] / stats(res['a'][0])['median']:.3f} {ci['median']}"
                     f" mean {s['mean'] / stats(res['a'][0])['mean']:.3f} {ci['mean']}" if ci else ""), flush=True)
        print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    print("\n| env | case | lifted / visible | median (m) | mean (m) | GSD (cm/px) | median, mean (px) "
          "| median / a [95% CI] | mean / a [95% CI] |\n|---|---|---|---|---|---|---|---|---|")
    base = {}
    for name, label, s, vis, ci in rows:
        base.setdefault(name, s)
        r = (f"{s['median'] / base[name]['median']:.2f} [{ci['median'][0]:.2f}, {ci['median'][1]:.2f}] | "
             f"{s['mean'] / base[name]['mean']:.2f} [{ci['mean'][0]:.2f}, {ci['mean'][1]:.2f}]") if ci else " | "
        print(f"| {name} | {label} | {s['n']} / {vis} | {s['median']:.3f} | {s['mean']:.3f} | {s['gsd']:.2f} | "
              f"{s['median_px']:.2f}, {s['mean_px']:.2f} | {r} |")


def write_target(env, graphs, cam, size, seed, tex, folder: Path) -> None:
    """Target images (images/) and their true visible graphs (scene_graphs/), as `sim2sg render` writes."""
    for s in render(env, graphs, cam, size, seed, tex):
        (folder / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "images" / f"{s.name}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        sg.write_graph(folder / "scene_graphs" / f"{s.name}.json", visible_graph(s))


def loop(args, train, tmp: Path) -> None:
    """The loop comparison: `sim2sg loop` (its library entry, `sim2sg.loop.run.run`, with the
    config the CLI builds) on the nominal and the non-nominal target; both rows start from one
    SDR phase (`LoopConfig.sdr_checkpoint`: the same data, steps and seed give the same state)."""
    import dataclasses
    import gzip

    from sim2sg.eval.content import placement_matches
    from sim2sg.loop.config import LoopConfig
    from sim2sg.loop.run import run

    env = load_env(args.loop)
    tex = texture_library(tmp)
    nominal, other, cam_file, size = other_camera(env, tmp)
    graphs = list(sample_scenes(env, seed=1000 + args.seed, count=args.targets))
    base = LoopConfig(env=args.loop, target="", out="", align="label", iterations=args.iterations,
                      sdr_scenes=args.sdr_scenes, width=train[0], height=train[1], sdr_steps=args.sdr_steps,
                      iter_steps=args.iter_steps, arch="fast", device="cpu", seed=args.seed, progress=False,
                      sdr_checkpoint=str(tmp / "sdr_phase.pt"))
    rows, rng = {}, np.random.default_rng(args.seed)
    for key, cam, sz, cam_arg in (("a", nominal, (nominal.width, nominal.height), None),
                                  ("b", other, size, str(cam_file))):
        folder = tmp / f"target_{key}"
        write_target(env, graphs, cam, sz, args.seed, tex, folder)
        cfg = dataclasses.replace(base, target=str(folder / "images"), target_graphs=str(folder / "scene_graphs"),
                                  out=str(tmp / f"run_{key}"), target_camera=cam_arg)
        print(f"sim2sg loop --env {cfg.env} --target TARGET_{key} --target-graphs GRAPHS_{key} --model fast "
              f"--size {train[0]}x{train[1]} --sdr-scenes {cfg.sdr_scenes} --sdr-steps {cfg.sdr_steps} --iter-steps "
              f"{cfg.iter_steps} --loop {cfg.iterations} --align label --device cpu --seed {cfg.seed}"
              + (" --target-camera CAMERA.json" if cam_arg else ""), flush=True)
        t = time.perf_counter()
        hist = run(cfg, log=lambda m: print(m, flush=True))
        true = {p.stem: sg.read_graph(p, env.categories, env.predicates)
                for p in sorted((folder / "scene_graphs").glob("*.json"))}
        for it in range(1, args.iterations + 1):
            per_image = []  # matched errors per target image, for the bootstrap over images
            for line in gzip.decompress((tmp / f"run_{key}" / "graphs" / f"iter{it}.jsonl.gz").read_bytes()).splitlines():
                r = json.loads(line)
                per_image.append(placement_matches(sg.from_dict(r["generated"], "generated"), true[f"{r['target']:06d}"])
                                 if r["lifted"] else [])
            phase = next(p for p in hist["phases"] if p["name"] == f"iteration {it}")
            rows[key, it] = (phase["placement"], per_image, sz)
        print(f"({key}: {time.perf_counter() - t:.0f} s)", flush=True)

    def gsd_median(key):
        cam = (nominal if key == "a" else other).resized(*train)  # as the loop sees the images
        g = [gsd_cm(cam, a["position"]) for p in sorted((tmp / f"target_{key}" / "scene_graphs").glob("*.json"))
             for _, a in sg.objects(sg.read_graph(p, env.categories, env.predicates))]
        return float(np.nanmedian(g))

    gsd = {k: gsd_median(k) for k in ("a", "b")}
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"\n| case | iteration | matched / lifted / true | median (m) | mean (m) | GSD at {train[0]}x{train[1]} (cm/px) "
          "| median / a [95% CI] | mean / a [95% CI] |\n|---|---|---|---|---|---|---|---|")
    for (key, it), (p, per_image, sz) in rows.items():
        ratio = " | "
        if key == "b" and p["matched"] and rows["a", it][0]["matched"]:
            ci = paired_ratio_ci([[(e, 0) for e in x] for x in per_image],
                                 [[(e, 0) for e in x] for x in rows["a", it][1]], rng)
            a = rows["a", it][0]
            ratio = (f"{p['median_m'] / a['median_m']:.2f} [{ci['median'][0]:.2f}, {ci['median'][1]:.2f}] | "
                     f"{p['mean_m'] / a['mean_m']:.2f} [{ci['mean'][0]:.2f}, {ci['mean'][1]:.2f}]")
        print(f"| {key}, {sz[0]}x{sz[1]} | {it} | {p['matched']} / {p['lifted']} / {p['true']} | {fmt(p['median_m'])} | "
              f"{fmt(p['mean_m'])} | {gsd[key]:.1f} | {ratio} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", default="clevr,dining,driving")
    ap.add_argument("--scenes", type=int, default=200, help="true-box scenes per environment (0: skip)")
    ap.add_argument("--train-size", default="256x256")
    ap.add_argument("--skip-c", action="store_true", help="skip case c (b lifted with the nominal camera)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--loop", default="", help="environment of the loop comparison (empty: skip)")
    ap.add_argument("--targets", type=int, default=160, help="loop: target images per case")
    ap.add_argument("--size", default="96x96", help="loop: training size")
    ap.add_argument("--sdr-scenes", type=int, default=256)
    ap.add_argument("--sdr-steps", type=int, default=300)
    ap.add_argument("--iter-steps", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.scenes:
            true_boxes(args, tuple(int(v) for v in args.train_size.split("x")), Path(tmp))
        if args.loop:
            loop(args, tuple(int(v) for v in args.size.split("x")), Path(tmp))


if __name__ == "__main__":
    main()
