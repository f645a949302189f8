"""Stages authored by plain pxr, not sim2sg's compiler (Omniverse / Isaac style): references to
another layer, payloads, instanceable prims, Y-up centimetres, the common xformOp stacks, and
relations derived from 3D with an environment's rules when the stage carries no sim2sg graph."""

from __future__ import annotations

import numpy as np
import pytest
from pxr import Gf, UsdGeom
from test_render_helpers import add_camera, add_lights, bind, label, material, new_stage

from sim2sg.errors import InputError
from sim2sg.render.scene import with_environment_relations
from sim2sg.scene import graph as graphlib
from sim2sg.scene.environment import load_env
from sim2sg.usd.read import load_scene


def _asset(path, up="Z", mpu=1.0):
    """A 1 m (in the asset's units) cube asset layer, red UsdPreviewSurface, origin at its bottom centre."""
    st = new_stage(path, up, mpu)
    k = 1.0 / mpu
    cube = UsdGeom.Cube.Define(st, "/World/Body")
    cube.CreateSizeAttr(1.0 * k)
    UsdGeom.Xformable(cube).AddTranslateOp().Set(Gf.Vec3d(0, 0.5 * k, 0) if up == "Y" else Gf.Vec3d(0, 0, 0.5 * k))
    bind(cube.GetPrim(), material(st, "/World/Looks/Red", color=(1.0, 0.0, 0.0)))
    st.GetRootLayer().Save()
    return path


def _bounds(s, inst):
    p = s.tri_pos[s.tri_instance == inst].reshape(-1, 3)
    return p.min(0), p.max(0)


def _scene(tmp_path, up="Z", mpu=1.0, how="reference", ops="translate"):
    """Three labelled cubes referenced (or payloaded) from an asset layer, at world (x, y) =
    (0, 0), (2, 0), (0, 2) m, the third instanceable; stage up axis and units as given."""
    asset = _asset(tmp_path / "asset.usda", up, mpu)
    st = new_stage(tmp_path / f"scene_{up}_{how}_{ops}.usda", up, mpu)
    k = 1.0 / mpu

    def stage_xyz(x, y, z):  # Z-up meters -> the stage's axes and units
        return (x * k, z * k, -y * k) if up == "Y" else (x * k, y * k, z * k)

    eye, up_vec = stage_xyz(6, -8, 5), ((0, 1, 0) if up == "Y" else (0, 0, 1))
    add_camera(st, eye, stage_xyz(1, 1, 0), up=up_vec, near=0.1 * k, far=1000 * k)
    add_lights(st)
    for i, (x, y) in enumerate([(0, 0), (2, 0), (0, 2)]):
        prim = st.DefinePrim(f"/World/Objects/Crate{i}", "Xform")
        arc = prim.GetPayloads() if how == "payload" else prim.GetReferences()
        arc.AddReference(str(asset), "/World") if how != "payload" else arc.AddPayload(str(asset), "/World")
        xf = UsdGeom.Xformable(prim)
        t = Gf.Vec3d(*stage_xyz(x, y, 0))
        if ops == "transform":
            xf.AddTransformOp().Set(Gf.Matrix4d().SetScale(Gf.Vec3d(1, 1, 1)) * Gf.Matrix4d().SetTranslate(t))
        elif ops == "trs":  # translate, rotateXYZ, scale: a quarter turn about up leaves a cube a cube
            xf.AddTranslateOp().Set(t)
            xf.AddRotateXYZOp().Set(Gf.Vec3f(0, 90, 0) if up == "Y" else Gf.Vec3f(0, 0, 90))
            xf.AddScaleOp().Set(Gf.Vec3f(1, 1, 1))
        else:
            xf.AddTranslateOp().Set(t)
        label(prim, "cube")
        if i == 2:
            prim.SetInstanceable(True)
    st.GetRootLayer().Save()
    return st.GetRootLayer().realPath


@pytest.mark.parametrize("up, mpu, how, ops", [
    ("Z", 1.0, "reference", "translate"),
    ("Y", 0.01, "reference", "trs"),
    ("Z", 0.01, "payload", "transform"),
    ("Y", 1.0, "payload", "translate"),
])
def test_referenced_payloaded_and_instanced_objects_land_in_metres(tmp_path, up, mpu, how, ops):
    s = load_scene(_scene(tmp_path, up, mpu, how, ops), 64, 48)
    assert s.inst_label == ("cube", "cube", "cube") and s.categories == ("cube",)
    for inst, (x, y) in enumerate([(0, 0), (2, 0), (0, 2)], start=1):
        lo, hi = _bounds(s, inst)  # the instanceable third crate is read through its instance proxies
        np.testing.assert_allclose(lo, (x - 0.5, y - 0.5, 0.0), atol=1e-4)
        np.testing.assert_allclose(hi, (x + 0.5, y + 0.5, 1.0), atol=1e-4)
    assert np.allclose(s.mat_color[s.tri_material[s.tri_instance == 3]], (1.0, 0.0, 0.0))  # the asset's material
    assert s.camera.position == pytest.approx((6, -8, 5), abs=1e-4)


def test_relations_from_3d_with_an_environment_when_the_stage_has_no_graph(tmp_path):
    env = load_env("clevr")
    s = load_scene(_scene(tmp_path), 64, 48)
    assert s.graph is None and s.predicates == ()
    r = with_environment_relations(s, env)
    assert r.predicates == env.predicates and r.categories == env.categories
    assert list(r.inst_category_id) == [env.categories.index("cube") + 1] * 3
    rels = set(graphlib.relations(r.graph))
    # crate 1 is 2 m along +x of crate 0: from a camera at (6, -8) looking at (1, 1), +x is to the right
    assert (1, "right", 0) in rels and (0, "left", 1) in rels
    assert (2, "behind", 0) in rels and (0, "front", 2) in rels
    # a stage with classes outside the environment keeps its own vocabulary, with a clear error
    with pytest.raises(InputError, match="not in environment"):
        with_environment_relations(s, load_env("driving"))


def test_what_the_renderer_cannot_draw_is_named(tmp_path):
    st = new_stage(tmp_path / "curves.usda")
    add_camera(st, (4, -4, 3), (0, 0, 0))
    UsdGeom.Cube.Define(st, "/World/Box")
    curves = UsdGeom.BasisCurves.Define(st, "/World/Hair")
    curves.CreatePointsAttr([(0, 0, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1)])
    curves.CreateCurveVertexCountsAttr([4])
    st.GetRootLayer().Save()
    s = load_scene(tmp_path / "curves.usda", 32, 32)
    assert s.skipped == (("/World/Hair", "BasisCurves"),)


def test_cli_render_names_the_prims_it_cannot_draw(tmp_path):
    """`sim2sg render` says, one line per stage, which prims it left out (and still renders the rest)."""
    from sim2sg.cli.app import app
    from typer.testing import CliRunner

    (tmp_path / "stages").mkdir()
    for name in ("curves", "plain"):  # the plain stage draws everything: no line
        st = new_stage(tmp_path / "stages" / f"{name}.usda")
        add_camera(st, (4, -4, 3), (0, 0, 0))
        label(UsdGeom.Cube.Define(st, "/World/Box").GetPrim(), "cube")
        if name == "curves":
            curves = UsdGeom.BasisCurves.Define(st, "/World/Hair")
            curves.CreatePointsAttr([(0, 0, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1)])
            curves.CreateCurveVertexCountsAttr([4])
            UsdGeom.Points.Define(st, "/World/Dust").CreatePointsAttr([(0, 0, 2)])
        st.GetRootLayer().Save()
    r = CliRunner().invoke(app, ["render", str(tmp_path / "stages"), "--out", str(tmp_path / "out"), "--size",
                                 "32x32", "--env", "clevr", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if "cannot draw" in x]
    assert lines == [f"{tmp_path / 'stages' / 'curves.usda'}: skipped 2 prims it cannot draw: "
                     f"/World/Hair (BasisCurves), /World/Dust (Points)"]
    assert "rendered 2, skipped 0, failed 0 of 2" in r.output


def test_cli_render_of_a_foreign_stage_with_env_has_relations(tmp_path):
    import json

    from sim2sg.cli.app import app
    from typer.testing import CliRunner

    stage = _scene(tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["render", str(stage), "--out", str(out), "--size", "192x144", "--env", "clevr",
                                 "--device", "cpu", "--writers", "sg,vg", "--no-progress"])
    assert r.exit_code == 0, r.output
    labels = json.loads((out / "labels.json").read_text())
    assert [c["name"] for c in labels["categories"]] == ["cube", "sphere", "cylinder"]
    assert len(labels["annotations"]) == 3 and len(labels["relationships"]) >= 4
    vg = json.loads((out / "vg/scene_graphs.json").read_text())
    assert {r["predicate"] for r in vg[0]["relationships"]} <= {"front", "behind", "left", "right"}
