"""Stages import into Blender: bpy's USD importer (optional; skips when no bpy interpreter).

bpy needs numpy<2 (and bpy 5.0.1 is the last for Python 3.11), so it lives in its own venv:
`BPY_INSTALL` below. The interpreter is $SIM2SG_BPY_PYTHON, else `.bpy-venv/bin/python` in the
repository root when it can `import bpy`. One small stage per environment, in both
formats, goes through tests/blender_import_check.py in one subprocess; its JSON report is
compared with the scene graph and with the stage (read with pxr here).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pxr import Usd, UsdGeom, UsdLux, UsdShade

from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scenes
from sim2sg.usd.compile import graph2usd

ENVS = ("clevr", "dining", "driving")
FORMATS = ("usdc", "usda")
CHECK_SCRIPT = Path(__file__).with_name("blender_import_check.py")
DEFAULT_BPY_PYTHON = str(Path(__file__).resolve().parents[1] / ".bpy-venv" / "bin" / "python")
BPY_INSTALL = "python3.11 -m venv .bpy-venv && .bpy-venv/bin/pip install bpy==5.0.1 'numpy<2'"


def _bpy_python() -> str | None:
    env = os.environ.get("SIM2SG_BPY_PYTHON")
    if env:
        return env
    if os.path.exists(DEFAULT_BPY_PYTHON):
        try:
            r = subprocess.run([DEFAULT_BPY_PYTHON, "-c", "import bpy"], capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode == 0:
            return DEFAULT_BPY_PYTHON
    return None


@pytest.fixture(scope="module")
def bpy_python():
    py = _bpy_python()
    if py is None:
        pytest.skip(f"bpy not available: in the repository root run `{BPY_INSTALL}` "
                    "(or point SIM2SG_BPY_PYTHON at a Python that can import bpy)")
    return py


@pytest.fixture(scope="module")
def imported(bpy_python, tmp_path_factory):
    """{(env, fmt): (graph, stage path, Blender report)} for scene 0 of each environment."""
    root = tmp_path_factory.mktemp("blender")
    cases = {}
    for name in ENVS:
        env = load_env(name)
        (g,) = sample_scenes(env, seed=3, count=1)
        gfile = root / name / "graphs" / "000000.json"
        sg.write_graph(gfile, g)
        for fmt in FORMATS:
            res = graph2usd([gfile], root / name / fmt, seed=3, fmt=fmt)
            assert not res.failed, res.failed
            cases[(name, fmt)] = (g, str(res.written[0].resolve()))
    stages = [p for _, p in cases.values()]
    r = subprocess.run([bpy_python, str(CHECK_SCRIPT), *stages, "--usd-python", sys.executable],
                       capture_output=True, text=True, timeout=300)
    reports = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            rep = json.loads(line)
            reports[rep["stage"]] = rep
    assert set(reports) == set(stages), f"rc={r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return {k: (g, p, reports[p]) for k, (g, p) in cases.items()}


CASES = [(e, f) for e in ENVS for f in FORMATS]


def _usd_shader_input(mat: UsdShade.Material, shader: str, name: str):
    prim = mat.GetPrim().GetStage().GetPrimAtPath(mat.GetPath().AppendChild(shader))
    if not prim:
        return None
    inp = UsdShade.Shader(prim).GetInput(name)
    return inp.Get() if inp else None


@pytest.mark.parametrize("case", CASES, ids=[f"{e}-{f}" for e, f in CASES])
def test_no_import_errors(imported, case):
    _, _, rep = imported[case]
    assert rep["errors"] == []
    assert rep["meshes_without_material"] == []


@pytest.mark.parametrize("case", CASES, ids=[f"{e}-{f}" for e, f in CASES])
def test_every_object_arrives_as_a_mesh(imported, case):
    g, path, rep = imported[case]
    stage = Usd.Stage.Open(path)
    objs = dict(sg.objects(g))
    assert len(rep["object_meshes"]) == len(objs)
    n_context = sum(1 for p in Usd.PrimRange(stage.GetPrimAtPath("/World/Context")) if p.IsA(UsdGeom.Mesh))
    assert n_context > 0
    assert len(rep["context_meshes"]) == n_context
    assert rep["num_meshes"] == len(objs) + n_context

    seen = set()
    for m in rep["object_meshes"]:
        # Blender names the merged Xform+Mesh after the Mesh prim, obj_NNNN_mesh; its material
        # /World/Looks/obj_NNNN names the same graph object.
        (mat,) = m["materials"]
        assert mat.startswith("obj_")
        oid = int(mat[4:])
        assert m["name"].startswith(f"obj_{oid:04d}_mesh"), m["name"]
        a = objs[oid]
        seen.add(oid)
        usd_mesh = UsdGeom.Mesh(stage.GetPrimAtPath(f"/World/Objects/obj_{oid:04d}/obj_{oid:04d}_mesh"))
        assert m["vertices"] == len(usd_mesh.GetPointsAttr().Get())
        assert m["faces"] == len(usd_mesh.GetFaceVertexCountsAttr().Get())
        assert "st" in m["uv_layers"]
        # Blender's world-space box = the USD mesh's points through its local-to-world matrix.
        pts = np.array(usd_mesh.GetPointsAttr().Get(), dtype=np.float64)
        xf = np.array(usd_mesh.ComputeLocalToWorldTransform(Usd.TimeCode.Default()))
        world = pts @ xf[:3, :3] + xf[3, :3]
        np.testing.assert_allclose(m["bbox"]["min"], world.min(0), atol=1e-4)
        np.testing.assert_allclose(m["bbox"]["max"], world.max(0), atol=1e-4)
        # ... and sits where the graph puts the object (bottom centre at position, height size z;
        # some assets stray ~2 % of their size from the unit box, hence the loose tolerance).
        pos, size = np.array(a["position"]), np.array(a["size"])
        np.testing.assert_allclose((world.min(0)[:2] + world.max(0)[:2]) / 2, pos[:2], atol=0.02 * size.max())
        assert world.min(0)[2] == pytest.approx(pos[2], abs=1e-4)
    assert seen == set(objs)


@pytest.mark.parametrize("case", CASES, ids=[f"{e}-{f}" for e, f in CASES])
def test_legacy_semantic_labels_arrive_as_custom_properties(imported, case):
    g, _, rep = imported[case]
    objs = dict(sg.objects(g))
    for m in rep["object_meshes"]:
        oid = int(m["materials"][0][4:])
        assert m["props"].get("semantic:Semantics:params:semanticData") == objs[oid]["category"]
        assert m["props"].get("semantic:Semantics:params:semanticType") == "class"


@pytest.mark.parametrize("case", CASES, ids=[f"{e}-{f}" for e, f in CASES])
def test_materials_and_textures(imported, case):
    _, path, rep = imported[case]
    stage = Usd.Stage.Open(path)
    looks = {p.GetName(): UsdShade.Material(p) for p in stage.GetPrimAtPath("/World/Looks").GetChildren()}
    by_name = {m["name"]: m for m in rep["materials"]}
    assert set(by_name) == set(looks)
    for name, mat in looks.items():
        m = by_name[name]
        assert m["roughness"] == pytest.approx(_usd_shader_input(mat, "PBR", "roughness"), abs=1e-4)
        assert m["metallic"] == pytest.approx(_usd_shader_input(mat, "PBR", "metallic"), abs=1e-4)
        tex_file = _usd_shader_input(mat, "Texture", "file")
        if tex_file is None:
            assert not m["textured"]
            assert not m["base_color_linked"]
            np.testing.assert_allclose(m["base_color"], list(_usd_shader_input(mat, "PBR", "diffuseColor")),
                                       atol=1e-4)
            continue
        assert m["textured"] and m["base_color_linked"]
        assert m["image_loaded"], m["images"]
        (img,) = m["images"]
        assert Path(img["filepath"]).name == Path(tex_file.path).name
        assert Path(img["filepath"]).exists()
        # UsdUVTexture.scale (the tint) becomes a vector multiply on the texture colour.
        np.testing.assert_allclose(m["tint"], list(_usd_shader_input(mat, "Texture", "scale"))[:3], atol=1e-4)
        uv_scale = _usd_shader_input(mat, "UVTransform", "scale")
        if uv_scale is not None:
            np.testing.assert_allclose(m["uv_scale"], list(uv_scale), atol=1e-5)
    assert rep["num_textured_loaded"] == rep["num_textured_materials"]
    assert all(i["loaded"] for i in rep["images"])


@pytest.mark.parametrize("case", CASES, ids=[f"{e}-{f}" for e, f in CASES])
def test_camera_field_of_view_and_pose(imported, case):
    g, _, rep = imported[case]
    cam = g.graph["camera"]
    (bc,) = rep["cameras"]
    assert bc["type"] == "PERSP"
    assert bc["resolution"] == [cam.width, cam.height]
    hfov = math.degrees(2 * math.atan(cam.width / (2 * cam.fx)))
    assert bc["hfov_deg"] == pytest.approx(hfov, abs=0.5)
    assert rep["checks"]["hfov_match"], rep["checks"]  # against the USD camera, 0.01 degree
    assert bc["sensor_height_mm"] / bc["sensor_width_mm"] == pytest.approx(cam.height * cam.fx / (cam.width * cam.fy),
                                                                           rel=1e-4)
    assert bc["cx"] == pytest.approx(cam.cx, abs=0.5)
    assert bc["cy"] == pytest.approx(cam.cy, abs=0.5)
    assert bc["clip"] == pytest.approx([cam.near, cam.far], rel=1e-5)
    np.testing.assert_allclose(bc["location"], cam.position, atol=1e-4)
    fwd = np.asarray(cam.look_at, float) - np.asarray(cam.position, float)
    np.testing.assert_allclose(bc["forward"], fwd / np.linalg.norm(fwd), atol=1e-4)
    assert rep["scene_camera"] is None  # Blender's importer does not set the scene camera


@pytest.mark.parametrize("case", CASES, ids=[f"{e}-{f}" for e, f in CASES])
def test_lights(imported, case):
    _, path, rep = imported[case]
    stage = Usd.Stage.Open(path)
    assert set(rep["lights"]) == {"SUN"}
    (sun,) = rep["lights"]["SUN"]
    key = stage.GetPrimAtPath("/World/Lights/Key")
    m = np.array(UsdGeom.Xformable(key).ComputeLocalToWorldTransform(Usd.TimeCode.Default()))
    np.testing.assert_allclose(sun["direction"], -m[2, :3] / np.linalg.norm(m[2, :3]), atol=1e-4)
    np.testing.assert_allclose(sun["color"], list(UsdLux.DistantLight(key).GetColorAttr().Get()), atol=1e-4)
    # The DomeLight becomes the World background (only when the scene has a World).
    fill = UsdLux.DomeLight(stage.GetPrimAtPath("/World/Lights/Fill"))
    bg = rep["world_background"]
    assert bg is not None
    np.testing.assert_allclose(bg["color"], list(fill.GetColorAttr().Get()), atol=1e-4)
    assert bg["strength"] == pytest.approx(fill.GetIntensityAttr().Get(), abs=1e-4)


@pytest.mark.parametrize("mode", ["z-m", "y-cm"])
def test_a_stage_exported_by_blender_renders_with_its_labels_in_metres(bpy_python, tmp_path, mode):
    """The other direction: a scene authored in Blender and written by Blender's USD exporter
    (tests/blender_export_scene.py; legacy Semantics labels, Z-up metres or Y-up centimetres with
    matrix ops) through `sim2sg render --env clevr`: both objects labelled, standing where Blender
    put them (meters, +Z up), the camera's 50 mm / 36 mm field of view, the cube's box at its
    projected corners."""
    from sim2sg.cli.app import app
    from typer.testing import CliRunner

    stage = tmp_path / "blender.usda"
    r = subprocess.run([bpy_python, str(Path(__file__).with_name("blender_export_scene.py")), str(stage), mode],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and stage.is_file(), f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["render", str(stage), "--out", str(out), "--size", "64x48", "--env", "clevr",
                                 "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    env = load_env("clevr")
    g = sg.read_graph(out / "scene_graphs" / "000000.json", env.categories, env.predicates)
    objs = {a["category"]: a for _, a in sg.objects(g)}
    assert set(objs) == {"cube", "sphere"}
    np.testing.assert_allclose(objs["cube"]["position"], (0.5, 0.3, 0.0), atol=1e-4)
    np.testing.assert_allclose(objs["cube"]["size"], (1.0, 1.0, 1.0), atol=1e-4)
    np.testing.assert_allclose(objs["sphere"]["position"], (-1.0, 0.8, 0.0), atol=1e-3)
    cam = g.graph["camera"]
    assert cam.fx == pytest.approx(50 / 36 * 64, rel=1e-5) and cam.position == pytest.approx((6, -6, 4), abs=1e-5)
    corners = np.array([[0.5 + dx, 0.3 + dy, dz] for dx in (-.5, .5) for dy in (-.5, .5) for dz in (0, 1)])
    uv, _ = cam.project(corners)
    labels = json.loads((out / "labels.json").read_text())
    cube_id = next(c["id"] for c in labels["categories"] if c["name"] == "cube")
    (ann,) = [a for a in labels["annotations"] if a["category_id"] == cube_id]
    x, y, w, h = ann["bbox"]
    np.testing.assert_allclose([x, y, x + w, y + h], [*uv.min(0), *uv.max(0)], atol=1.0)
