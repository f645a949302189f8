"""Import sim2sg USD stages into Blender and print what arrived, one JSON line per stage.

Run BY a Python that has `bpy` (bpy needs numpy<2, so it lives in its own venv), not by pytest:

    .bpy-venv/bin/python tests/blender_import_check.py STAGE [STAGE ...] [--usd-python PY]

Each stage is imported into an empty factory scene (plus an empty World, so that the stage's
DomeLight has somewhere to go) with `bpy.ops.wm.usd_import` at its default settings. The JSON
line lists mesh objects (object meshes = children of /World/Objects, context meshes = children
of /World/Context), materials (textured or not, whether the image loaded), cameras (lens, sensor,
shift, derived field of view and principal point), lights by type, the world background, the
import time and errors.

--usd-python PY: an interpreter with `pxr` (default: $SIM2SG_USD_PYTHON, else the repo's
.venv/bin/python when present). With it the USD camera is read too, the scene's render
resolution is set from the stage's `sim2sg:resolution`, and `checks.hfov_match` compares
Blender's horizontal field of view with the USD camera's (tolerance 0.01 degree).
The bpy wheel has no `pxr` module of its own. Blender prints its own lines to stdout too: the
report lines are the ones that start with `{`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import bpy

HFOV_TOL_DEG = 0.01

# Run with an interpreter that has pxr: prints the USD camera of each stage as JSON.
_USD_CAMERA_SNIPPET = r"""
import json, math, sys
from pxr import Usd, UsdGeom
out = {}
for path in sys.argv[1:]:
    stage = Usd.Stage.Open(path)
    cams = [p for p in stage.Traverse() if p.IsA(UsdGeom.Camera)]
    if not cams:
        out[path] = None
        continue
    prim = cams[0]
    gc = UsdGeom.Camera(prim).GetCamera(Usd.TimeCode.Default())
    res = prim.GetCustomDataByKey("sim2sg:resolution")
    out[path] = {
        "path": str(prim.GetPath()),
        "focal_length": gc.focalLength,
        "horizontal_aperture": gc.horizontalAperture,
        "vertical_aperture": gc.verticalAperture,
        "horizontal_aperture_offset": gc.horizontalApertureOffset,
        "vertical_aperture_offset": gc.verticalApertureOffset,
        "hfov_deg": math.degrees(2 * math.atan(gc.horizontalAperture / (2 * gc.focalLength))),
        "resolution": [int(res[0]), int(res[1])] if res is not None else None,
    }
print(json.dumps(out))
"""


def usd_cameras(stages: list[str], usd_python: str | None) -> tuple[dict, str | None]:
    """{stage: USD camera dict or None} read with pxr (here or in `usd_python`), and an error."""
    try:
        import pxr  # noqa: F401  (not in the bpy wheel, but maybe in a custom build)
    except ImportError:
        pass
    else:
        usd_python = sys.executable
    if not usd_python:
        return {}, "no interpreter with pxr: USD camera not read (pass --usd-python)"
    try:
        r = subprocess.run([usd_python, "-c", _USD_CAMERA_SNIPPET, *stages],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"{usd_python}: {e}"
    if r.returncode != 0:
        return {}, f"{usd_python} failed: {r.stderr.strip()[-500:]}"
    return json.loads(r.stdout.strip().splitlines()[-1]), None


def _r(x, nd=6):
    return round(float(x), nd)


def world_bbox(obj) -> dict:
    """Axis-aligned box of the mesh's vertices in world space."""
    import numpy as np

    me = obj.data
    co = np.empty(len(me.vertices) * 3, dtype=np.float64)
    me.vertices.foreach_get("co", co)
    m = np.array(obj.matrix_world, dtype=np.float64)
    pts = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    return {"min": [_r(v) for v in pts.min(0)], "max": [_r(v) for v in pts.max(0)]}


def _under(obj, name: str) -> bool:
    p = obj.parent
    while p is not None:
        if p.name == name:
            return True
        p = p.parent
    return False


def image_loaded(img) -> bool:
    """Whether Blender has the image's pixels (reading `size` makes it load a lazy image)."""
    if img is None:
        return False
    try:
        w, h = img.size[:]
    except Exception:
        return False
    return bool(w > 0 and h > 0 and img.has_data)


def material_info(mat) -> dict:
    info = {"name": mat.name, "textured": False, "images": [], "image_loaded": None,
            "base_color": None, "base_color_linked": False, "tint": None, "uv_scale": None,
            "roughness": None, "metallic": None}
    nt = mat.node_tree
    if nt is None:
        return info
    for n in nt.nodes:
        if n.type == "BSDF_PRINCIPLED":
            bc = n.inputs["Base Color"]
            info["base_color"] = [_r(v) for v in bc.default_value[:3]]
            info["base_color_linked"] = bc.is_linked
            info["roughness"] = _r(n.inputs["Roughness"].default_value)
            info["metallic"] = _r(n.inputs["Metallic"].default_value)
        elif n.type == "TEX_IMAGE":
            img = n.image
            loaded = image_loaded(img)
            info["images"].append({
                "name": img.name if img else None,
                "filepath": bpy.path.abspath(img.filepath) if img else None,
                "packed": bool(img and img.packed_file),
                "size": list(img.size[:]) if img else None,
                "loaded": loaded,
            })
        elif n.type == "VECT_MATH" and n.operation in ("MULTIPLY", "MULTIPLY_ADD"):
            info["tint"] = [_r(v) for v in n.inputs[1].default_value[:3]]
        elif n.type == "MAPPING":
            info["uv_scale"] = [_r(v) for v in n.inputs["Scale"].default_value[:2]]
    if info["images"]:
        info["textured"] = True
        info["image_loaded"] = all(i["loaded"] for i in info["images"])
    return info


def camera_info(obj) -> dict:
    cam = obj.data
    scene = bpy.context.scene
    w, h = scene.render.resolution_x, scene.render.resolution_y
    fit = cam.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if w >= h else "VERTICAL"
    # Blender: the fitted sensor side spans the fitted image side; shift is in units of it.
    if fit == "HORIZONTAL":
        hfov = 2 * math.atan(cam.sensor_width / (2 * cam.lens))
        span = w
    else:
        sensor = cam.sensor_height if cam.sensor_fit == "VERTICAL" else cam.sensor_width
        vfov = 2 * math.atan(sensor / (2 * cam.lens))
        hfov = 2 * math.atan(math.tan(vfov / 2) * w / h)
        span = h
    mw = obj.matrix_world
    return {
        "name": obj.name,
        "type": cam.type,
        "lens_mm": _r(cam.lens),
        "sensor_width_mm": _r(cam.sensor_width),
        "sensor_height_mm": _r(cam.sensor_height),
        "sensor_fit": cam.sensor_fit,
        "shift_x": _r(cam.shift_x),
        "shift_y": _r(cam.shift_y),
        "clip": [_r(cam.clip_start), _r(cam.clip_end)],
        "resolution": [w, h],
        "hfov_deg": _r(math.degrees(hfov)),
        # Principal point in pixels (x right, y down) implied by the shift at this resolution.
        "cx": _r(w / 2 - cam.shift_x * span, 4),
        "cy": _r(h / 2 + cam.shift_y * span, 4),
        "location": [_r(v) for v in mw.translation],
        "forward": [_r(-mw[i][2]) for i in range(3)],  # cameras look down local -Z
        "up": [_r(mw[i][1]) for i in range(3)],
    }


def check_stage(path: str, usd_cam: dict | None) -> dict:
    rep: dict = {"stage": path, "errors": []}
    bpy.ops.wm.read_factory_settings(use_empty=True)
    # The importer turns a DomeLight into the scene World's background, but only when the scene
    # has a World; the empty factory scene has none.
    bpy.context.scene.world = bpy.data.worlds.new("World")
    res = (usd_cam or {}).get("resolution")
    if res:
        bpy.context.scene.render.resolution_x, bpy.context.scene.render.resolution_y = res
        bpy.context.scene.render.resolution_percentage = 100
    t0 = time.perf_counter()
    try:
        result = bpy.ops.wm.usd_import(filepath=path)
        if "FINISHED" not in result:
            rep["errors"].append(f"usd_import returned {sorted(result)}")
    except Exception as e:  # RuntimeError carries the operator's error reports
        rep["errors"].append(f"usd_import: {e}")
    rep["import_s"] = round(time.perf_counter() - t0, 4)

    meshes, object_meshes, context_meshes = [], [], []
    for o in sorted(bpy.data.objects, key=lambda o: o.name):
        if o.type != "MESH":
            continue
        me = o.data
        mats = [s.material.name for s in o.material_slots if s.material]
        entry = {
            "name": o.name,
            "parent": o.parent.name if o.parent else None,
            "materials": mats,
            "vertices": len(me.vertices),
            "faces": len(me.polygons),
            "uv_layers": [u.name for u in me.uv_layers],
            "bbox": world_bbox(o),
            "props": {k: o[k] for k in o.keys() if isinstance(o[k], (str, int, float))},
        }
        meshes.append(entry)
        # Default import merges an Xform with its only child mesh: an object arrives as one
        # mesh object under "Objects" (named after the Mesh prim); a context mesh under "Context",
        # or under "World" when it is the only one (the merged "Context" Xform).
        if _under(o, "Objects"):
            object_meshes.append(entry)
        else:
            context_meshes.append(entry)
    rep["num_meshes"] = len(meshes)
    rep["mesh_names"] = [m["name"] for m in meshes]
    rep["object_meshes"] = object_meshes
    rep["context_meshes"] = context_meshes
    rep["meshes_without_material"] = [m["name"] for m in meshes if not m["materials"]]

    mats = [material_info(m) for m in sorted(bpy.data.materials, key=lambda m: m.name)]
    rep["materials"] = mats
    rep["num_materials"] = len(mats)
    rep["num_textured_materials"] = sum(m["textured"] for m in mats)
    rep["num_textured_loaded"] = sum(bool(m["image_loaded"]) for m in mats)
    rep["images"] = [{"name": i.name, "filepath": bpy.path.abspath(i.filepath),
                      "file_exists": os.path.exists(bpy.path.abspath(i.filepath)) if i.filepath else False,
                      "loaded": image_loaded(i)} for i in bpy.data.images]

    cams = [o for o in bpy.data.objects if o.type == "CAMERA"]
    rep["cameras"] = [camera_info(o) for o in cams]
    rep["scene_camera"] = bpy.context.scene.camera.name if bpy.context.scene.camera else None
    rep["usd_camera"] = usd_cam

    lights: dict[str, list] = {}
    for o in bpy.data.objects:
        if o.type == "LIGHT":
            li = o.data
            d = {"name": o.name, "energy": _r(li.energy), "color": [_r(c) for c in li.color],
                 "direction": [_r(-o.matrix_world[i][2]) for i in range(3)]}
            if li.type == "SUN":
                d["angle_rad"] = _r(li.angle)
            lights.setdefault(li.type, []).append(d)
    rep["lights"] = lights
    world = bpy.context.scene.world
    bg = None
    if world and world.node_tree:
        for n in world.node_tree.nodes:
            if n.type == "BACKGROUND":
                bg = {"color": [_r(v) for v in n.inputs["Color"].default_value[:3]],
                      "strength": _r(n.inputs["Strength"].default_value),
                      "color_linked": n.inputs["Color"].is_linked}
    rep["world_background"] = bg

    checks = {}
    if usd_cam and rep["cameras"]:
        diff = abs(rep["cameras"][0]["hfov_deg"] - usd_cam["hfov_deg"])
        checks["hfov_diff_deg"] = _r(diff)
        checks["hfov_match"] = diff <= HFOV_TOL_DEG
        if not checks["hfov_match"]:
            rep["errors"].append(f"horizontal FOV {rep['cameras'][0]['hfov_deg']:.4f} deg in Blender, "
                                 f"{usd_cam['hfov_deg']:.4f} deg in USD")
    elif not rep["cameras"]:
        rep["errors"].append("no camera imported")
    rep["checks"] = checks
    return rep


def main(argv: list[str]) -> int:
    if "--" in argv:  # `blender -b -P script -- args` style
        argv = argv[argv.index("--") + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stages", nargs="+")
    default_py = os.environ.get("SIM2SG_USD_PYTHON")
    repo_py = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
    if not default_py and repo_py.exists():
        default_py = str(repo_py)
    ap.add_argument("--usd-python", default=default_py)
    args = ap.parse_args(argv)
    stages = [str(Path(s).resolve()) for s in args.stages]
    cams, cam_err = usd_cameras(stages, args.usd_python)
    status = 0
    for s in stages:
        if not os.path.exists(s):
            rep = {"stage": s, "errors": ["no such file"]}
        else:
            rep = check_stage(s, cams.get(s))
        if cam_err:
            rep.setdefault("warnings", []).append(cam_err)
        status |= bool(rep["errors"])
        print(json.dumps(rep, sort_keys=True), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
