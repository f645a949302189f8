"""graph2usd: valid stages (pxr.UsdValidation), graph stored and read back, deterministic bytes,
a camera whose USD projection equals ours, labels, materials, textures and lights as authored."""

import numpy as np
import pytest
from pxr import Gf, Usd, UsdGeom, UsdLux, UsdSemantics, UsdShade

from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scenes
from sim2sg.usd.compile import graph2usd
from sim2sg.usd.stage import read_graph_from_stage, validate


@pytest.fixture(scope="module", params=["clevr", "dining", "driving"])
def compiled(request, tmp_path_factory):
    env = load_env(request.param)
    d = tmp_path_factory.mktemp(request.param)
    graphs = list(sample_scenes(env, seed=11, count=3))
    for i, g in enumerate(graphs):
        sg.write_graph(d / "graphs" / f"{i:06d}.json", g)
    files = sorted((d / "graphs").glob("*.json"))
    res = graph2usd(files, d / "stages", seed=5, fmt="usdc")
    assert not res.failed and len(res.written) == 3
    return env, graphs, res.written, d


def test_zero_validation_errors(compiled):
    _, _, stages, _ = compiled
    for p in stages:
        assert validate(p) == []


def test_graph_read_back_equals_input(compiled):
    env, graphs, stages, _ = compiled
    for g, p in zip(graphs, stages):
        g2, info = read_graph_from_stage(p)
        assert sg.to_json(g2) == sg.to_json(g)
        assert info["categories"] == list(env.categories) and info["predicates"] == list(env.predicates)


@pytest.mark.parametrize("fmt", ["usdc", "usda"])
def test_same_graph_and_seed_same_bytes(compiled, tmp_path, fmt):
    _, _, _, d = compiled
    files = sorted((d / "graphs").glob("*.json"))
    a = graph2usd(files, tmp_path / "a", seed=5, fmt=fmt).written
    b = graph2usd(files, tmp_path / "b", seed=5, fmt=fmt).written
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    c = graph2usd(files[:1], tmp_path / "c", seed=6, fmt=fmt).written
    assert c[0].read_bytes() != a[0].read_bytes()


def test_camera_projection_matches(compiled):
    _, graphs, stages, _ = compiled
    g, stage = graphs[0], Usd.Stage.Open(str(stages[0]))
    cam = g.graph["camera"]
    gf = UsdGeom.Camera(stage.GetPrimAtPath("/World/Camera")).GetCamera(Usd.TimeCode.Default())
    frustum = gf.frustum
    view, proj = frustum.ComputeViewMatrix(), frustum.ComputeProjectionMatrix()
    pts = np.array([a["position"] for _, a in sg.objects(g)]) + [0, 0, 0.3]
    ours, depth = cam.project(pts)
    for p, uv, z in zip(pts, ours, depth):
        ndc = proj.Transform(view.Transform(Gf.Vec3d(*p)))
        u = (ndc[0] + 1) / 2 * cam.width
        v = (1 - ndc[1]) / 2 * cam.height
        np.testing.assert_allclose([u, v], uv, atol=1e-3)
    lo, hi = gf.clippingRange.min, gf.clippingRange.max
    assert (lo, hi) == pytest.approx((cam.near, cam.far))


def test_objects_labels_materials_lights(compiled):
    env, graphs, stages, d = compiled
    g, stage = graphs[0], Usd.Stage.Open(str(stages[0]))
    assert UsdGeom.GetStageUpAxis(stage) == "Z" and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert stage.GetDefaultPrim().GetPath() == "/World"
    objs = stage.GetPrimAtPath("/World/Objects").GetChildren()
    assert len(objs) == len(g)
    for prim in objs:
        oid = prim.GetCustomDataByKey("sim2sg:id")
        cat = g.nodes[oid]["category"]
        labels = UsdSemantics.LabelsAPI(prim, "class").GetLabelsAttr().Get()
        assert list(labels) == [cat]
        assert prim.GetAttribute("semantic:Semantics:params:semanticData").Get() == cat
        mesh = prim.GetChild(f"obj_{oid:04d}_mesh")
        mat, _ = UsdShade.MaterialBindingAPI(mesh).ComputeBoundMaterial()
        assert mat, f"{prim.GetPath()} has no material"
        # The world bound of the object equals its graph box (size at position, turned by yaw).
        xf = UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(Usd.TimeCode.Default())
        assert np.allclose(xf.ExtractTranslation(), g.nodes[oid]["position"])
    for prim in stage.Traverse():
        if prim.IsA(UsdShade.Shader) and UsdShade.Shader(prim).GetIdAttr().Get() == "UsdUVTexture":
            f = UsdShade.Shader(prim).GetInput("file").Get().resolvedPath
            assert f and (d / "stages" / "textures").exists()
    key = UsdLux.DistantLight(stage.GetPrimAtPath("/World/Lights/Key"))
    m = key.ComputeLocalToWorldTransform(Usd.TimeCode.Default())
    down = m.TransformDir(Gf.Vec3d(0, 0, -1))
    assert down[2] < 0  # the key light shines downwards
    assert UsdLux.DomeLight(stage.GetPrimAtPath("/World/Lights/Fill")).GetIntensityAttr().Get() > 0


def test_bad_graph_in_folder_is_named_and_others_compile(compiled, tmp_path):
    _, _, _, d = compiled
    files = sorted((d / "graphs").glob("*.json"))
    bad = tmp_path / "zzz_bad.json"
    bad.write_text(files[0].read_text().replace('"size": [', '"size": [-', 1))
    res = graph2usd(files + [bad], tmp_path / "out")
    assert len(res.written) == 3 and len(res.failed) == 1
    assert "zzz_bad.json" in str(res.failed[0]) and "size" in res.failed[0].field


def test_missing_texture_is_a_validation_error(compiled, tmp_path):
    _, _, stages, d = compiled
    stage = Usd.Stage.Open(str(stages[0]))
    tex = [p for p in stage.Traverse()
           if p.IsA(UsdShade.Shader) and UsdShade.Shader(p).GetIdAttr().Get() == "UsdUVTexture"]
    if not tex:
        pytest.skip("no textured surface in this scene")
    UsdShade.Shader(tex[0]).GetInput("file").Set("./textures/missing.png")
    assert any("missing.png" in e or "resolve" in e.lower() for e in validate(stage))
