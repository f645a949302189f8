"""sim2sg.usd.read: any valid stage -> SceneData (world +Z up, meters)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from pxr import Gf, UsdGeom, UsdLux
from test_render_helpers import (
    add_camera,
    add_lights,
    bind,
    ground,
    label,
    material,
    new_stage,
    quad,
    shape,
)

from sim2sg.errors import InputError
from sim2sg.scene import graph as graphlib
from sim2sg.scene.camera import Camera
from sim2sg.usd.read import load_scene


def _bounds(s, inst):
    p = s.tri_pos[s.tri_instance == inst].reshape(-1, 3)
    return p.min(0), p.max(0)


def test_primitive_sizes_axes_and_nested_xforms(tmp_path):
    st = new_stage(tmp_path / "p.usda")
    add_camera(st, (10, 0, 2), (0, 0, 0))
    shape(st, "/World/A", "Cube", (0, 0, 0), "a", size=2.0)
    shape(st, "/World/B", "Sphere", (5, 0, 0), "b", radius=0.5)
    shape(st, "/World/C", "Cylinder", (0, 5, 0), "c", radius=0.25, height=3.0, axis="X")
    shape(st, "/World/D", "Cone", (0, -5, 0), "d", radius=1.0, height=2.0)
    shape(st, "/World/E", "Capsule", (0, 0, 5), "e", radius=0.5, height=1.0, axis="Y")
    outer = UsdGeom.Xform.Define(st, "/World/Outer")
    UsdGeom.Xformable(outer).AddTranslateOp().Set(Gf.Vec3d(0, 0, 10))
    UsdGeom.Xformable(outer).AddScaleOp().Set(Gf.Vec3f(2, 2, 2))
    shape(st, "/World/Outer/F", "Cube", (1, 0, 0), "f", size=1.0)
    st.GetRootLayer().Save()
    s = load_scene(tmp_path / "p.usda", 64, 64)
    assert s.inst_label == ("a", "b", "c", "d", "e", "f")
    lo, hi = _bounds(s, 1)
    np.testing.assert_allclose([lo, hi], [[-1, -1, -1], [1, 1, 1]], atol=1e-6)
    lo, hi = _bounds(s, 2)
    np.testing.assert_allclose(hi - lo, [1, 1, 1], atol=0.02)
    lo, hi = _bounds(s, 3)  # axis X: length 3 along x
    np.testing.assert_allclose(hi - lo, [3, 0.5, 0.5], atol=0.01)
    lo, hi = _bounds(s, 5)  # capsule along Y: total 1 + 2 * 0.5
    np.testing.assert_allclose(hi - lo, [1, 2, 1], atol=0.01)
    lo, hi = _bounds(s, 6)  # translate (1,0,0) inside scale 2 then +10 z
    np.testing.assert_allclose([lo, hi], [[1, -1, 9], [3, 1, 11]], atol=1e-6)
    n = np.linalg.norm(s.tri_normal, axis=-1)
    np.testing.assert_allclose(n, 1.0, atol=1e-5)


def test_y_up_centimetre_stage_matches_z_up_metres(tmp_path):
    def build(path, up, mpu):
        st = new_stage(path, up, mpu)
        k = 1.0 / mpu
        if up == "Z":
            add_camera(st, (4 * k, -3 * k, 2 * k), (0, 0, 0), up=(0, 0, 1), near=0.1 * k)
            shape(st, "/World/A", "Cube", (1 * k, 0.5 * k, 0.25 * k), "a", size=0.5 * k)
        else:  # z-up (x, y, z) is y-up (x, z, -y)
            add_camera(st, (4 * k, 2 * k, 3 * k), (0, 0, 0), up=(0, 1, 0), near=0.1 * k)
            shape(st, "/World/A", "Cube", (1 * k, 0.25 * k, -0.5 * k), "a", size=0.5 * k)
        st.GetRootLayer().Save()
        return load_scene(path, 64, 64)

    a = build(tmp_path / "z.usda", "Z", 1.0)
    b = build(tmp_path / "y.usda", "Y", 0.01)
    np.testing.assert_allclose(np.sort(a.tri_pos.reshape(-1, 3), 0), np.sort(b.tri_pos.reshape(-1, 3), 0), atol=1e-5)
    np.testing.assert_allclose(a.camera.rotation(), b.camera.rotation(), atol=1e-6)
    np.testing.assert_allclose(a.camera.position, b.camera.position, atol=1e-5)
    assert b.camera.near == pytest.approx(0.1)
    assert b.camera.position == pytest.approx((4, -3, 2))
    assert a.camera.orientation is None and b.camera.orientation is None  # upright: plain look-at cameras


def test_camera_intrinsics_and_offsets(tmp_path):
    st = new_stage(tmp_path / "c.usda")
    add_camera(st, (0, -10, 1), (0, 0, 1), focal=24.0, h_ap=36.0, v_ap=24.0, offset=(1.8, -1.2))
    ground(st)
    st.GetRootLayer().Save()
    cam = load_scene(tmp_path / "c.usda", 300, 200).camera
    assert cam.fx == pytest.approx(24 / 36 * 300) and cam.fy == pytest.approx(24 / 24 * 200)
    assert cam.cx == pytest.approx(150 - 1.8 * 300 / 36)
    assert cam.cy == pytest.approx(100 - 1.2 * 200 / 24)
    ref = Camera(300, 200, cam.fx, cam.fy, cam.cx, cam.cy, (0, -10, 1), (0, 0, 1))
    np.testing.assert_allclose(cam.rotation(), ref.rotation(), atol=1e-9)


def test_textured_material_lights_legacy_label_hidden_and_guide(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, :2] = (0, 0, 255)  # BGR red on the left half
    cv2.imwrite(str(tmp_path / "tex.png"), img)
    st = new_stage(tmp_path / "t.usda")
    add_camera(st, (0, -5, 0), (0, 0, 0))
    add_lights(st, key=2.0, dome=0.25)
    q = quad(st, "/World/Q", [(-1, 0, -1), (1, 0, -1), (1, 0, 1), (-1, 0, 1)], [(0, 0), (1, 0), (1, 1), (0, 1)])
    label(q.GetPrim(), "poster", legacy=True)
    bind(q.GetPrim(), material(st, "/World/Looks/T", texture="./tex.png", roughness=0.3, metallic=0.7))
    hidden = quad(st, "/World/H", [(-1, 1, -1), (1, 1, -1), (1, 1, 1), (-1, 1, 1)])
    UsdGeom.Imageable(hidden).MakeInvisible()
    guide = quad(st, "/World/G", [(-1, 2, -1), (1, 2, -1), (1, 2, 1), (-1, 2, 1)])
    UsdGeom.Imageable(guide).CreatePurposeAttr(UsdGeom.Tokens.guide)
    st.GetRootLayer().Save()
    s = load_scene(tmp_path / "t.usda", 64, 64)
    assert len(s.tri_pos) == 2 and s.inst_label == ("poster",) and s.categories == ("poster",)
    assert len(s.textures) == 1 and s.mat_texture[0] == 0
    np.testing.assert_allclose(s.textures[0][0, 0], [1, 0, 0])
    assert s.mat_roughness[0] == pytest.approx(0.3) and s.mat_metallic[0] == pytest.approx(0.7)
    np.testing.assert_allclose(s.ambient, [0.25] * 3)
    np.testing.assert_allclose(s.distant_rgb, [[2.0] * 3])
    # rotateXYZ (30, 0, 20) of local -Z
    a, c = math.radians(30), math.radians(20)
    d = np.array([math.sin(a) * -math.sin(c) * -1, -math.sin(a) * math.cos(c) * -1, -math.cos(a)])
    assert np.linalg.norm(s.distant_dir[0]) == pytest.approx(1.0, abs=1e-5)
    assert s.distant_dir[0][2] == pytest.approx(d[2], abs=1e-5)


def test_distant_dome_and_sphere_lights_in_centimetres_and_pruned_subtrees(tmp_path):
    st = new_stage(tmp_path / "l.usda", "Z", 0.01)
    add_camera(st, (0, -500, 200), (0, 0, 0), near=1.0)
    floor = quad(st, "/World/Floor", [(-100, -100, 0), (100, -100, 0), (100, 100, 0), (-100, 100, 0)])
    label(floor.GetPrim(), "floor")
    sun = UsdLux.DistantLight.Define(st, "/World/Sun")
    sun.CreateColorAttr(Gf.Vec3f(1.0, 0.5, 0.25))
    sun.CreateIntensityAttr(2.0)
    sun.CreateExposureAttr(1.0)
    UsdGeom.Xformable(sun).AddRotateXOp().Set(90.0)  # local -Z -> world +Y
    UsdLux.DomeLight.Define(st, "/World/Sky").CreateIntensityAttr(0.5)
    sky2 = UsdLux.DomeLight.Define(st, "/World/Sky2")
    sky2.CreateIntensityAttr(0.5)
    sky2.CreateExposureAttr(-2.0)
    lamp = UsdLux.SphereLight.Define(st, "/World/Lamp")
    lamp.CreateIntensityAttr(5.0)
    lamp.CreateRadiusAttr(10.0)
    UsdGeom.Xformable(lamp).AddTranslateOp().Set(Gf.Vec3d(100, 200, 300))
    # an invisible and a guide subtree: neither their lights nor their geometry nor their labels count
    for name, prune in (("Hidden", lambda im: im.MakeInvisible()),
                        ("Guide", lambda im: im.CreatePurposeAttr(UsdGeom.Tokens.guide))):
        root = UsdGeom.Xform.Define(st, f"/World/{name}")
        prune(UsdGeom.Imageable(root))
        UsdLux.SphereLight.Define(st, f"/World/{name}/Lamp").CreateIntensityAttr(100.0)
        UsdLux.DistantLight.Define(st, f"/World/{name}/Sun").CreateIntensityAttr(100.0)
        UsdLux.DomeLight.Define(st, f"/World/{name}/Sky").CreateIntensityAttr(100.0)
        shape(st, f"/World/{name}/Box", "Cube", (0, 0, 50), name.lower(), size=20.0)
    st.GetRootLayer().Save()
    s = load_scene(tmp_path / "l.usda", 32, 32)
    assert len(s.tri_pos) == 2 and s.inst_label == ("floor",)
    np.testing.assert_allclose(s.distant_rgb, [[4.0, 2.0, 1.0]])
    np.testing.assert_allclose(s.distant_dir, [[0.0, 1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(s.ambient, [0.625] * 3)
    np.testing.assert_allclose(s.sphere_pos, [[1.0, 2.0, 3.0]], atol=1e-6)
    np.testing.assert_allclose(s.sphere_radius, [0.1], atol=1e-7)
    np.testing.assert_allclose(s.sphere_rgb, [[5.0] * 3])
    assert s.tri_pos.max() == pytest.approx(1.0)  # the 2 m floor, in metres


def test_sim2sg_layer_data_gives_graph_ids_and_vocabularies(tmp_path):
    cam = Camera(64, 64, 50, 50, 32, 32, (5, 0, 2), (0, 0, 0))
    g = graphlib.new_graph("clevr", cam)
    graphlib.add_object(g, 7, "sphere", (0, 0, 0), 0.0, (1, 1, 1))
    st = new_stage(tmp_path / "s.usda")
    add_camera(st, (5, 0, 2), (0, 0, 0))
    shape(st, "/World/Objects/obj_0007", "Sphere", (0, 0, 0.5), "sphere", 7, radius=0.5)
    st.GetRootLayer().customLayerData = {"sim2sg": {"graph": graphlib.to_json(g), "categories": ["cube", "sphere"],
                                                    "predicates": ["left", "right"], "env": "clevr"}}
    st.GetRootLayer().Save()
    s = load_scene(tmp_path / "s.usda", 64, 64)
    assert s.categories == ("cube", "sphere") and s.predicates == ("left", "right") and s.env == "clevr"
    assert s.inst_category_id.tolist() == [2] and s.inst_object_id.tolist() == [7]
    assert 7 in s.graph.nodes


def _bad(tmp_path, name, build):
    st = new_stage(tmp_path / name)
    build(st)
    st.GetRootLayer().Save()
    with pytest.raises(InputError) as e:
        load_scene(tmp_path / name, 64, 64)
    return e.value


def test_bad_stages_give_input_errors(tmp_path):
    e = _bad(tmp_path, "nocam.usda", lambda st: ground(st))
    assert e.field == "camera"
    e = _bad(tmp_path, "nogeo.usda", lambda st: add_camera(st, (1, 1, 1), (0, 0, 0)))
    assert e.field == "geometry"

    def degenerate(st):
        add_camera(st, (1, 1, 1), (0, 0, 0))
        quad(st, "/World/D", [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)])  # collinear: zero area
    assert _bad(tmp_path, "degen.usda", degenerate).field == "geometry"

    def nan(st):
        add_camera(st, (1, 1, 1), (0, 0, 0))
        quad(st, "/World/N", [(0, 0, 0), (1, 0, 0), (float("nan"), 1, 0), (0, 1, 0)])
    e = _bad(tmp_path, "nan.usda", nan)
    assert "/World/N" in e.field and "NaN" in e.message

    def missing_texture(st):
        add_camera(st, (1, 1, 1), (0, 0, 0))
        q = quad(st, "/World/Q", [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)])
        bind(q.GetPrim(), material(st, "/World/Looks/M", texture="./nope.png"))
    e = _bad(tmp_path, "tex.usda", missing_texture)
    assert "nope.png" in e.message

    with pytest.raises(InputError):
        load_scene(tmp_path / "does_not_exist.usda", 64, 64)
    (tmp_path / "garbage.usda").write_text("#usda 1.0\n(((\n")
    with pytest.raises(InputError):
        load_scene(tmp_path / "garbage.usda", 64, 64)


def test_degenerate_triangles_are_dropped_when_others_remain(tmp_path):
    st = new_stage(tmp_path / "d.usda")
    add_camera(st, (1, 1, 1), (0, 0, 0))
    m = UsdGeom.Mesh.Define(st, "/World/M")
    m.CreatePointsAttr([(0, 0, 0), (1, 0, 0), (0, 1, 0), (2, 2, 0)])
    m.CreateFaceVertexCountsAttr([3, 3])
    m.CreateFaceVertexIndicesAttr([0, 1, 2, 0, 0, 3])  # second face repeats a vertex
    st.GetRootLayer().Save()
    assert len(load_scene(tmp_path / "d.usda", 64, 64).tri_pos) == 1


def test_rolled_camera_keeps_its_orientation(tmp_path):
    st = new_stage(tmp_path / "r.usda")
    add_camera(st, (0, -10, 0), (0, 0, 0), up=(1, 0, 1))  # rolled 45 degrees about the optical axis
    ground(st)
    st.GetRootLayer().Save()
    cam = load_scene(tmp_path / "r.usda", 64, 64).camera
    assert cam.orientation is not None
    s = math.sqrt(0.5)
    # OpenCV rows (right, down, forward): up = (s, 0, s), forward = +y, right = forward x up
    np.testing.assert_allclose(cam.rotation(), [[s, 0, -s], [-s, 0, -s], [0, 1, 0]], atol=1e-9)
    uv, _ = cam.project(np.array([[1.0, 0.0, 1.0]]))  # on the camera's up axis: straight above the centre
    np.testing.assert_allclose(uv[0], [32, 32 - 20 / 20 * 64 * math.sqrt(2) / 10], atol=1e-6)
    assert Camera.from_dict(cam.to_dict()) == cam


def test_upright_camera_dict_has_no_orientation():
    cam = Camera(64, 48, 50, 50, 32, 24, (5, 0, 2), (0, 0, 0))
    assert "orientation" not in cam.to_dict() and Camera.from_dict(cam.to_dict()) == cam


@pytest.mark.parametrize("case, message", [
    ("camera_zero_scale", "/World/Camera: camera transform is degenerate"),
    ("near_after_far", "/World/Camera.clippingRange: need 0 < near < far"),
    ("negative_near", "/World/Camera.clippingRange: need 0 < near < far"),
    ("zero_meters_per_unit", "metersPerUnit: must be positive"),
    ("negative_meters_per_unit", "metersPerUnit: must be positive")])
def test_degenerate_cameras_and_units_are_input_errors(tmp_path, case, message):
    """Found by fuzzing: these rendered through a NaN camera, clipped everything or mirrored the
    world silently ("no renderable geometry" for a zero metersPerUnit misled)."""
    mpu = {"zero_meters_per_unit": 0.0, "negative_meters_per_unit": -1.0}.get(case, 1.0)
    st = new_stage(tmp_path / "s.usda", mpu=mpu)
    near, far = {"near_after_far": (10.0, 1.0), "negative_near": (-1.0, 0.0)}.get(case, (0.01, 1000.0))
    cam = add_camera(st, (10, 0, 2), (0, 0, 0), near=near, far=far)
    if case == "camera_zero_scale":
        UsdGeom.Xformable(cam).AddScaleOp().Set(Gf.Vec3f(0, 0, 0))
    quad(st, "/World/Q", [(-1, -1, 0), (1, -1, 0), (1, 1, 0), (-1, 1, 0)])
    st.GetRootLayer().Save()
    with pytest.raises(InputError, match=message):
        load_scene(tmp_path / "s.usda", 16, 16)


def test_a_flattened_mesh_with_normals_reads(tmp_path):
    """A zero scale on a mesh that has normals raised numpy's LinAlgError (its transform has no
    inverse to carry the normals); its triangles now get face normals, and the flat ones drop."""
    st = new_stage(tmp_path / "s.usda")
    add_camera(st, (0, 0, 10), (0, 0.001, 0), up=(0, 1, 0))
    q = quad(st, "/World/Q", [(-1, -1, 0), (1, -1, 0), (1, 1, 0), (-1, 1, 0)])
    q.CreateNormalsAttr([Gf.Vec3f(0, 0, 1)] * 4)
    q.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    UsdGeom.Xformable(q).AddScaleOp().Set(Gf.Vec3f(1, 0, 1))  # a line: no area left
    quad(st, "/World/Keep", [(-1, -1, 0), (1, -1, 0), (1, 1, 0), (-1, 1, 0)])
    flat = quad(st, "/World/Flat", [(-1, 0, -1), (1, 0, -1), (1, 0, 1), (-1, 0, 1)])
    flat.CreateNormalsAttr([Gf.Vec3f(0, 1, 0)] * 4)
    flat.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    UsdGeom.Xformable(flat).AddScaleOp().Set(Gf.Vec3f(1, 1, 0))  # x-z quad squashed along z: a line
    st.GetRootLayer().Save()
    s = load_scene(tmp_path / "s.usda", 16, 16)
    assert np.isfinite(s.tri_normal).all()
