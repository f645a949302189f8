"""Renderer benchmark: labelled images per second, sim2sg's torch rasterizer vs an OpenGL reference.

    .venv/bin/python benchmarks/render.py --device cpu --threads 2 --batch 16 --compile
    .venv/bin/python benchmarks/render.py --device cuda --batch 1024 --compile

Scenes: `sim2sg.scene.sdr.sample_scenes` + `sim2sg.usd.compile.compile_graph` for the built-in `clevr`
(256x256) and `driving` (640x192) environments, written as .usdc to a temporary folder and read with
`sim2sg.usd.read.load_scene` (the same path as `sim2sg render`). `--scenes N` distinct scenes are
tiled to fill a batch.

sim2sg figure: full pipeline per batch, everything `sim2sg render` needs from the renderer: raster,
key-light shadow map, shading (textures, Lambert + Blinn-Phong, dome ambient), labels (depth,
instance/semantic masks, boxes, visible pixels, occlusion, truncation) and the host copy into
`Sample`s. The breakdown synchronises the device after each stage (so the total with breakdown is
slightly slower than the plain timing, which is what img/s reports).

OpenGL reference: moderngl with an EGL context (Mesa llvmpipe on a CPU-only machine, the NVIDIA
driver where one is present), drawing the same world-space triangles with the same camera per
image, Lambert + Blinn-Phong from per-vertex material colours (no textures, no shadows: it does less
work than sim2sg), writing colour + an integer instance attachment + depth, read back to the host,
plus a numpy count of each instance's pixels. It reports the fraction of pixels whose instance id
agrees with sim2sg's.

Install the reference on Debian: `apt-get install -y libegl1 libgl1-mesa-dri libegl-mesa0` and
`.venv/bin/pip install moderngl`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_scenes(env_name: str, count: int, folder: Path, width: int, height: int):
    """`count` stages of a built-in environment, loaded as SceneData for width x height images."""
    from sim2sg.scene.environment import load_env
    from sim2sg.scene.look import randomize_look
    from sim2sg.scene.sdr import sample_scenes
    from sim2sg.usd.compile import compile_graph, look_rng, write_textures
    from sim2sg.usd.read import load_scene
    from sim2sg.usd.stage import write_stage

    env = load_env(env_name)
    scenes = []
    for i, g in enumerate(sample_scenes(env, 0, count)):
        stage, textures = compile_graph(g, env, randomize_look(g, env, look_rng(0, f"{env_name}{i:06d}")))
        write_textures(folder, textures)
        p = folder / f"{env_name}{i:06d}.usdc"
        write_stage(stage, p)
        scenes.append(load_scene(p, width, height))
    return scenes


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_sim2sg(scenes, width, height, batch, device, compiled, iters, ssaa=1):
    from sim2sg.render.batch import pack
    from sim2sg.render.pipeline import (
        RenderOptions,
        _intrinsics,
        render_batch,
        to_samples,
    )

    tiled = [scenes[i % len(scenes)] for i in range(batch)]
    names = [f"{i:06d}" for i in range(batch)]
    opt = RenderOptions(width, height, ssaa=ssaa, shadows=True, compile=compiled)
    packed = pack(tiled, device)
    k = _intrinsics(tiled, device)
    times: dict[str, float] = {}
    last = [0.0]

    def tick(name):
        sync(device)
        now = time.perf_counter()
        times[name] = times.get(name, 0.0) + now - last[0]
        last[0] = now

    with torch.no_grad():
        t0 = time.perf_counter()
        res = render_batch(packed, k, opt, names)  # warm-up (and compilation)
        to_samples(tiled, names, res, opt)
        sync(device)
        warm = time.perf_counter() - t0
        # plain timing; the median over iterations resists other jobs on a shared machine
        plain_t, dev_t = [], []
        for _ in range(iters):
            sync(device)
            t0 = time.perf_counter()
            res = render_batch(packed, k, opt, names)
            samples = to_samples(tiled, names, res, opt)
            sync(device)
            plain_t.append(time.perf_counter() - t0)
        # device only: labelled tensors stay on the device (the training loop's in-memory path)
        for _ in range(iters):
            sync(device)
            t0 = time.perf_counter()
            res = render_batch(packed, k, opt, names)
            sync(device)
            dev_t.append(time.perf_counter() - t0)
        plain, device_only = float(np.median(plain_t)), float(np.median(dev_t))
        # breakdown
        for _ in range(iters):
            sync(device)
            last[0] = time.perf_counter()
            res = render_batch(packed, k, opt, names, timer=tick)
            samples = to_samples(tiled, names, res, opt)
            tick("host copy")
    breakdown = {n: v / iters / batch * 1e3 for n, v in times.items()}  # means
    return batch / plain, batch / device_only, breakdown, warm, samples


GL_VS = """
#version 330
uniform mat4 world_to_clip;
in vec3 in_pos; in vec3 in_nrm; in vec3 in_col; in vec2 in_mat; in float in_inst;
out vec3 v_pos; out vec3 v_nrm; out vec3 v_col; out vec2 v_mat; flat out int v_inst;
void main() {
    v_pos = in_pos; v_nrm = in_nrm; v_col = in_col; v_mat = in_mat; v_inst = int(in_inst + 0.5);
    gl_Position = world_to_clip * vec4(in_pos, 1.0);
}
"""
GL_FS = """
#version 330
uniform vec3 eye; uniform vec3 key_dir; uniform vec3 key_rgb; uniform vec3 ambient;
in vec3 v_pos; in vec3 v_nrm; in vec3 v_col; in vec2 v_mat; flat in int v_inst;
layout(location = 0) out vec4 color; layout(location = 1) out int inst;
void main() {
    vec3 n = normalize(v_nrm); vec3 v = normalize(eye - v_pos);
    if (dot(n, v) < 0.0) n = -n;
    float rough = clamp(v_mat.x, 0.05, 1.0); float metal = v_mat.y;
    float a = rough * rough; float e = clamp(2.0 / (a * a) - 2.0, 1.0, 4096.0);
    vec3 l = -key_dir; vec3 h = normalize(l + v);
    vec3 f0 = mix(vec3(0.04), v_col, metal);
    vec3 fr = f0 + (1.0 - f0) * pow(1.0 - max(dot(v, h), 0.0), 5.0);
    vec3 spec = fr * (e + 8.0) / 8.0 * pow(max(dot(n, h), 0.0), e);
    vec3 c = (v_col * (1.0 - metal) + spec) * max(dot(n, l), 0.0) * key_rgb + ambient * (v_col * (1.0 - metal) + f0);
    c = clamp(c, 0.0, 1.0);
    color = vec4(mix(12.92 * c, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(0.0031308, c)), 1.0);
    inst = v_inst;
}
"""


def _gl_matrix(scene, width, height):
    cam = scene.camera  # at (width, height)
    fx, fy, cx, cy = cam.fx, cam.fy, cam.cx, cam.cy
    n, f = cam.near, cam.far
    proj = np.array([[2 * fx / width, 0, 2 * cx / width - 1, 0],
                     [0, -2 * fy / height, 1 - 2 * cy / height, 0],
                     [0, 0, (f + n) / (f - n), -2 * f * n / (f - n)],
                     [0, 0, 1, 0]])
    view = np.eye(4)
    view[:3, :3] = cam.rotation()
    view[:3, 3] = -cam.rotation() @ np.asarray(cam.position)
    return (proj @ view).astype(np.float32)


def bench_gl(scenes, width, height, count, iters):
    import moderngl

    ctx = moderngl.create_context(standalone=True, backend="egl")
    renderer = ctx.info.get("GL_RENDERER", "?")
    prog = ctx.program(vertex_shader=GL_VS, fragment_shader=GL_FS)
    vaos = []
    for s in scenes:
        t = len(s.tri_pos)
        m = s.tri_material
        col = np.repeat(s.mat_color[m][:, None], 3, 1)
        mat = np.repeat(np.stack([s.mat_roughness[m], s.mat_metallic[m]], -1)[:, None], 3, 1)
        inst = np.repeat(s.tri_instance[:, None, None].astype(np.float32), 3, 1)
        data = np.concatenate([s.tri_pos, s.tri_normal, col, mat, inst], -1).astype(np.float32).reshape(t * 3, -1)
        vbo = ctx.buffer(data.tobytes())
        vaos.append((ctx.vertex_array(prog, [(vbo, "3f 3f 3f 2f 1f", "in_pos", "in_nrm", "in_col", "in_mat", "in_inst")]), s))
    color = ctx.texture((width, height), 4)
    inst_tex = ctx.texture((width, height), 1, dtype="i4")
    depth = ctx.depth_texture((width, height))
    fbo = ctx.framebuffer([color, inst_tex], depth)
    fbo.use()
    ctx.enable(moderngl.DEPTH_TEST)

    def one(i):
        vao, s = vaos[i % len(vaos)]
        prog["world_to_clip"].write(_gl_matrix(s, width, height).T.copy().tobytes())
        prog["eye"].value = tuple(float(v) for v in s.camera.position)
        key = s.distant_dir[0] if len(s.distant_dir) else np.array([0, 0, -1.0])
        prog["key_dir"].value = tuple(float(v) for v in key)
        prog["key_rgb"].value = tuple(float(v) for v in (s.distant_rgb[0] if len(s.distant_rgb) else np.zeros(3)))
        prog["ambient"].value = tuple(float(v) for v in s.ambient)
        amb = [float(v) for v in np.clip(s.ambient, 0, 1)]
        fbo.clear(amb[0], amb[1], amb[2], 1.0, depth=1.0)
        inst_tex.write(np.zeros((height, width), np.int32).tobytes())  # integer attachment: cleared by hand
        vao.render(moderngl.TRIANGLES)
        img = np.frombuffer(fbo.read(components=3, attachment=0), np.uint8).reshape(height, width, 3)[::-1]
        ins = np.frombuffer(fbo.read(components=1, attachment=1, dtype="i4"), np.int32).reshape(height, width)[::-1]
        dep = np.frombuffer(fbo.read(components=1, attachment=-1, dtype="f4"), np.float32).reshape(height, width)[::-1]
        visible = np.bincount(ins.ravel(), minlength=s.num_instances + 1)
        return img, ins, dep, visible

    one(0)
    rounds = []
    for it in range(iters):
        t0 = time.perf_counter()
        for i in range(count):
            one(i)
        rounds.append(time.perf_counter() - t0)
    rate = count / float(np.median(rounds))
    firsts = [one(i)[1] for i in range(min(count, len(scenes)))]
    ctx.release()
    return rate, renderer, firsts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16, help="images per sim2sg batch")
    ap.add_argument("--scenes", type=int, default=8, help="distinct scenes per environment (tiled to the batch)")
    ap.add_argument("--iters", type=int, default=5, help="timed batches (median reported)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the renderer's arithmetic")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--ssaa", type=int, default=1)
    ap.add_argument("--envs", default="clevr:256x256,driving:640x192")
    ap.add_argument("--no-gl", action="store_true", help="skip the OpenGL reference")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.envs.split(","):
            env_name, size = spec.split(":")
            w, h = (int(v) for v in size.split("x"))
            scenes = build_scenes(env_name, args.scenes, Path(tmp), w, h)
            tris = float(np.mean([len(s.tri_pos) for s in scenes]))
            rate, dev_rate, breakdown, warm, samples = bench_sim2sg(scenes, w, h, args.batch, device, args.compile, args.iters, args.ssaa)
            gl_rate, renderer, agree = float("nan"), "-", float("nan")
            if not args.no_gl:
                try:
                    gl_rate, renderer, firsts = bench_gl(scenes, w, h, max(args.scenes, 8), args.iters)
                    same = [np.mean(firsts[i] == samples[i].instance) for i in range(min(len(firsts), len(samples)))]
                    agree = float(np.mean(same))
                except Exception as e:  # no EGL / moderngl: report sim2sg alone
                    renderer = f"unavailable ({type(e).__name__}: {e})"
            rows.append((env_name, f"{w}x{h}", tris, rate, dev_rate, gl_rate, renderer, agree, breakdown, warm))
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
    print(f"device: {dev_name}; torch {torch.__version__}; batch {args.batch}; compile {args.compile}; ssaa {args.ssaa}")
    print("sim2sg img/s: labelled Samples on the host; on-device: labelled tensors left on the device")
    print(f"{'env':8} {'size':8} {'tris':>6} {'sim2sg img/s':>13} {'on-device':>10} {'OpenGL img/s':>13} {'ratio':>6} {'inst agree':>10}  breakdown ms/img")
    for env_name, size, tris, rate, dev_rate, gl_rate, renderer, agree, bd, warm in rows:
        bds = " ".join(f"{k}={v:.3f}" for k, v in bd.items())
        print(f"{env_name:8} {size:8} {tris:6.0f} {rate:13.1f} {dev_rate:10.1f} {gl_rate:13.1f} {rate / gl_rate:6.2f} {agree:10.4%}  {bds}  (warm-up {warm:.1f} s)")
    print(f"OpenGL renderer: {rows[0][6] if rows else '-'}")


if __name__ == "__main__":
    main()
