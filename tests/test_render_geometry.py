"""Analytic checks of the rasterizer: projected corners, silhouette areas, depth values and order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pxr import Gf, UsdGeom
from test_render_helpers import (
    add_camera,
    add_lights,
    bind,
    ground,
    material,
    new_stage,
    quad,
    shape,
)

from sim2sg.dataset.render_job import render_stages
from sim2sg.render.pipeline import RenderOptions


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a CPU shared with other jobs, torch's OpenMP threads spin-wait on each
    other and small renders get ~40x slower. Restored afterwards (other tests keep their setting)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

OPT = RenderOptions(64, 64, shadows=False)


def _one(path, **kw):
    return render_stages([path], RenderOptions(**{**OPT.__dict__, **kw}))[0]


def test_cube_box_matches_projected_corners(tmp_path):
    st = new_stage(tmp_path / "cube.usda")
    add_camera(st, (4, -3, 2.5), (0.2, 0.1, 0.3), focal=20, h_ap=24, v_ap=24)
    shape(st, "/World/C", "Cube", (0.2, 0.1, 0.4), "cube", size=0.8)
    st.GetRootLayer().Save()
    s = _one(tmp_path / "cube.usda")
    corners = np.array([[0.2 + dx, 0.1 + dy, 0.4 + dz] for dx in (-.4, .4) for dy in (-.4, .4) for dz in (-.4, .4)])
    uv, z = s.camera.project(corners)
    # pixel j is covered when its centre j + 0.5 is inside: columns ceil(umin - .5) .. floor(umax - .5)
    exp = (math.ceil(uv[:, 0].min() - 0.5), math.ceil(uv[:, 1].min() - 0.5),
           math.floor(uv[:, 0].max() - 0.5) + 1, math.floor(uv[:, 1].max() - 0.5) + 1)
    assert len(s.objects) == 1
    np.testing.assert_allclose(s.objects[0].box, exp, atol=1.0)
    # depth of the visible surface lies within the corners' depth range
    d = s.depth[s.instance == 1]
    assert z.min() - 1e-4 <= d.min() and d.max() <= z.max() + 1e-4


def test_sphere_silhouette_area_matches_formula(tmp_path):
    r, dist, f_px = 0.5, 4.0, 64.0
    st = new_stage(tmp_path / "sph.usda")
    add_camera(st, (dist, 0, 0), (0, 0, 0), focal=20, h_ap=20, v_ap=20)  # fx = 64 px at 64 wide
    shape(st, "/World/S", "Sphere", (0, 0, 0), "ball", radius=r)
    st.GetRootLayer().Save()
    s = render_stages([tmp_path / "sph.usda"], RenderOptions(64, 64, shadows=False))[0]
    assert s.camera.fx == pytest.approx(f_px)
    # on-axis sphere: silhouette is a disc of radius f r / sqrt(d^2 - r^2) pixels
    expected = math.pi * f_px ** 2 * r ** 2 / (dist ** 2 - r ** 2)
    assert s.objects[0].visible_pixels == pytest.approx(expected, rel=0.04)
    # the nearest point is at depth d - r, on the optical axis (centre pixel region)
    assert s.depth.min() == pytest.approx(dist - r, abs=0.01)


def test_plane_depth_is_camera_z(tmp_path):
    st = new_stage(tmp_path / "plane.usda")
    add_camera(st, (0, 0, 3.0), (0, 0, 0), up=(0, 1, 0))  # straight down, 3 m above the ground
    ground(st, 100.0)
    st.GetRootLayer().Save()
    s = _one(tmp_path / "plane.usda")
    np.testing.assert_allclose(s.depth, 3.0, rtol=1e-5)
    assert (s.instance == 0).all() and s.objects == ()


def test_ground_crossing_the_near_plane_has_no_holes(tmp_path):
    st = new_stage(tmp_path / "low.usda")
    add_camera(st, (0, 0, 0.5), (0, 10, 0.5), near=0.1)  # horizontal view: ground under and behind us
    ground(st, 100.0)
    st.GetRootLayer().Save()
    s = _one(tmp_path / "low.usda")
    assert np.isfinite(s.depth[33:]).all() and np.isinf(s.depth[:31]).all()
    # camera-z depth of the ground at row i: h * fy / (v - cy)
    cam = s.camera
    i = np.arange(40, 64)
    np.testing.assert_allclose(s.depth[i, 32], 0.5 * cam.fy / (i + 0.5 - cam.cy), rtol=1e-4)


def test_depth_order_of_overlapping_objects(tmp_path):
    st = new_stage(tmp_path / "two.usda")
    add_camera(st, (10, 0, 0), (0, 0, 0), focal=20, h_ap=20, v_ap=20)
    shape(st, "/World/Near", "Cube", (2, 0.3, 0), "near", size=1.0)
    shape(st, "/World/Far", "Sphere", (-2, 0, 0), "far", radius=1.5)
    st.GetRootLayer().Save()
    s = _one(tmp_path / "two.usda")
    near, far = s.objects
    assert near.category == "near" and far.category == "far"
    assert near.occlusion == 0.0 and 0.0 < far.occlusion < 1.0
    # wherever the near cube is, depth is < 8.5 m (its front face at x = 2.5 -> 7.5 m)
    assert s.depth[s.instance == 1].max() < 8.6 and s.depth[s.instance == 2].min() > 10.0
    alone = far.visible_pixels / (1 - far.occlusion)
    assert alone == pytest.approx(far.visible_pixels + near.visible_pixels, rel=0.05)  # cube is inside the disc


def test_external_y_up_stage_with_all_primitives_and_texture(tmp_path):
    import cv2

    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:, :4] = (0, 0, 255)
    tex[:, 4:] = (0, 255, 0)
    cv2.imwrite(str(tmp_path / "rg.png"), tex)
    st = new_stage(tmp_path / "ext.usda", up="Y", mpu=0.01)  # centimetres, Y up
    add_camera(st, (0, 300, 900), (0, 0, 0), up=(0, 1, 0), focal=18, h_ap=20.955, v_ap=20.955, near=1, far=10000)
    add_lights(st, key=1.0, dome=0.4, rotate=(-60, 0, 0))
    quad(st, "/World/Floor", [(-1000, 0, -1000), (1000, 0, -1000), (1000, 0, 1000), (-1000, 0, 1000)])
    group = UsdGeom.Xform.Define(st, "/World/Group")
    UsdGeom.Xformable(group).AddRotateYOp().Set(30.0)
    UsdGeom.Xformable(group).AddTranslateOp().Set(Gf.Vec3d(0, 50, 0))
    kinds = [("Cube", {"size": 100.0}), ("Sphere", {"radius": 50.0}), ("Cylinder", {"radius": 40.0, "height": 100.0, "axis": "Y"}),
             ("Cone", {"radius": 50.0, "height": 100.0, "axis": "Y"}), ("Capsule", {"radius": 30.0, "height": 40.0, "axis": "Y"})]
    for i, (kind, attrs) in enumerate(kinds):
        x, p = shape(st, f"/World/Group/{kind}", kind, (-300 + 150 * i, 0, 0), kind.lower(), **attrs)
        m = material(st, f"/World/Looks/{kind}", texture="./rg.png" if kind == "Cube" else None,
                     color=(0.8, 0.3, 0.1), roughness=0.3, metallic=1.0 if kind == "Sphere" else 0.0)
        bind(p, m)
    st.GetRootLayer().Save()
    s = render_stages([tmp_path / "ext.usda"], RenderOptions(96, 64, shadows=True))[0]
    import os
    if os.environ.get("SIM2SG_DUMP"):
        cv2.imwrite(os.environ["SIM2SG_DUMP"], s.image[:, :, ::-1])
    assert s.categories == ("capsule", "cone", "cube", "cylinder", "sphere")
    assert sorted(o.category for o in s.objects) == sorted(s.categories)
    for o in s.objects:  # boxes inside the image, plausible size, depth in metres (~9.5 m away)
        assert o.visible_pixels > 10
        d = s.depth[s.instance == o.instance_id]
        assert 7.0 < d.min() < 12.0
    cube = next(o for o in s.objects if o.category == "cube")
    px = s.image[s.instance == cube.instance_id].astype(int)
    assert (px[:, 0] > px[:, 1] + 30).any() and (px[:, 1] > px[:, 0] + 30).any()  # red and green texels
    assert np.isfinite(s.depth).sum() > 0.5 * s.depth.size  # the floor


def test_near_and_far_clipping(tmp_path):
    st = new_stage(tmp_path / "clip.usda")
    add_camera(st, (10, 0, 0), (0, 0, 0), near=1.0, far=9.0)
    shape(st, "/World/A", "Cube", (9.8, 0, 0), "a", size=0.2)   # closer than near
    shape(st, "/World/B", "Cube", (0, 0, 0), "b", size=1.0)     # farther than far
    shape(st, "/World/C", "Cube", (5, 0, 2), "c", size=1.0)     # visible
    st.GetRootLayer().Save()
    s = _one(tmp_path / "clip.usda")
    assert [o.category for o in s.objects] == ["c"]


def test_sphere_light_falls_off_with_distance(tmp_path):
    from pxr import UsdLux

    st = new_stage(tmp_path / "sl.usda")
    add_camera(st, (0, 0, 6.0), (0, 0, 0), up=(0, 1, 0))
    ground(st, 100.0)
    light = UsdLux.SphereLight.Define(st, "/World/Lamp")
    light.CreateIntensityAttr(40.0)
    light.CreateRadiusAttr(0.2)
    UsdGeom.Xformable(light).AddTranslateOp().Set(Gf.Vec3d(0, 0, 1.0))
    st.GetRootLayer().Save()
    s = _one(tmp_path / "sl.usda")
    lum = s.image.astype(float).sum(-1)
    assert lum[32, 32] > lum[32, 60] + 20 and lum[32, 32] > lum[5, 5] + 20


def test_camera_looking_away_renders_background(tmp_path):
    st = new_stage(tmp_path / "away.usda")
    add_camera(st, (0, 0, 5), (0, 0, 10), up=(0, 1, 0))  # looking up, geometry below and behind
    add_lights(st, dome=0.5)
    shape(st, "/World/C", "Cube", (0, 0, 0), "cube", size=1.0)
    st.GetRootLayer().Save()
    s = _one(tmp_path / "away.usda")
    assert s.objects == () and np.isinf(s.depth).all() and (s.instance == 0).all()
    assert len(np.unique(s.image.reshape(-1, 3), axis=0)) == 1  # uniform dome colour


def test_fast_texel_wrap_equals_wrap():
    from sim2sg.render.shade import _wrap, _wrap_pair

    big = 2.0 ** 22
    i = torch.tensor([-big + 1, -1e6, -257.0, -256.0, -129.0, -128.0, -3.0, -1.0, -0.0, 0.0, 1.0, 6.0, 7.0, 127.0,
                      128.0, 255.0, 256.0, 1e6 + 3, big - 1])
    for n in (1, 3, 7, 128, 2 ** 16):
        for mode in (0, 1, 2):
            nn, mm = torch.full_like(i, n, dtype=torch.int64), torch.full_like(i, mode, dtype=torch.int64)
            a, b, exact = _wrap_pair(i, nn, mm)
            assert exact.all()
            assert torch.equal(a, _wrap(i, nn, mm)) and torch.equal(b, _wrap(i, nn, mm, 1)), (n, mode)
    # outside the exact range the caller falls back to `_wrap`
    odd = torch.tensor([big, -big, 1e30, float("inf"), float("nan")])
    assert not _wrap_pair(odd, torch.full_like(odd, 8, dtype=torch.int64), torch.zeros_like(odd, dtype=torch.int64))[2].any()
    assert not _wrap_pair(i, torch.full_like(i, 2 ** 16 + 1, dtype=torch.int64), torch.zeros_like(i, dtype=torch.int64))[2].any()


def test_shade_fast_equals_shade_also_with_huge_texture_coordinates(tmp_path):
    import dataclasses

    import cv2

    from sim2sg.render.batch import pack
    from sim2sg.render.pipeline import _intrinsics
    from sim2sg.render.raster import rasterize
    from sim2sg.render.shade import shade, shade_fast, view_triangles
    from sim2sg.usd.read import load_scene

    tex = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3) * 5
    cv2.imwrite(str(tmp_path / "t.png"), tex)
    st = new_stage(tmp_path / "t.usda")
    add_camera(st, (0, -6, 4), (0, 0, 0))
    add_lights(st)
    q = quad(st, "/World/Floor", [(-3, -3, 0), (3, -3, 0), (3, 3, 0), (-3, 3, 0)], [(-7, -5), (9, -5), (9, 8), (-7, 8)])
    bind(q.GetPrim(), material(st, "/World/Looks/T", texture="./t.png"))
    st.GetRootLayer().Save()
    scene = load_scene(tmp_path / "t.usda", 48, 32)
    for scale in (1.0, 1e7):  # 1e7: texel indices beyond 2^22, `shade_fast` falls back to `shade`
        batch = pack([scene], "cpu")
        batch = dataclasses.replace(batch, tri_uv=batch.tri_uv * scale)
        k = _intrinsics([scene], "cpu")
        frag = rasterize(view_triangles(batch, k), 1, 32, 48)
        args = (batch, frag.pix_to_face, frag.bary_coords, frag.zbuf, k)
        ref = shade(*args)
        assert (frag.pix_to_face >= 0).any()
        assert torch.equal(shade_fast(*args).view(torch.int32), ref.view(torch.int32))
