"""Labels: boxes agree with masks, dropping below the visibility threshold, truncation, SSAA,
determinism, shading differences (metal vs rubber, shadows) and post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_render_helpers import (
    add_camera,
    add_lights,
    bind,
    clevr_stage,
    material,
    new_stage,
    quad,
    shape,
)

from sim2sg.dataset.render_job import render_stages
from sim2sg.errors import InputError
from sim2sg.render.pipeline import RenderOptions, render_scenes
from sim2sg.render.post import PostProcess
from sim2sg.scene import graph as graphlib
from sim2sg.scene.camera import Camera
from sim2sg.usd.read import load_scene


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a CPU shared with other jobs, torch's OpenMP threads spin-wait on each
    other and small renders get ~40x slower. Restored afterwards (other tests keep their setting)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(scope="module")
def clevr(tmp_path_factory):
    d = tmp_path_factory.mktemp("clevr")
    return [clevr_stage(d / f"{i:06d}.usda", n=6, seed=i) for i in range(3)]


def _check_boxes(sample):
    ids = set(np.unique(sample.instance)) - {0}
    assert ids == {o.instance_id for o in sample.objects}
    for o in sample.objects:
        ys, xs = np.nonzero(sample.instance == o.instance_id)
        assert o.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert o.visible_pixels == len(xs)
        assert (sample.semantic[sample.instance == o.instance_id] == o.category_id).all()
        assert sample.categories[o.category_id - 1] == o.category
        assert 0.0 <= o.occlusion <= 1.0 and 0.0 <= o.truncation <= 1.0
    assert ((sample.instance > 0) == (sample.semantic > 0)).all()


def test_boxes_agree_with_masks_and_batches_match_singles(clevr):
    opt = RenderOptions(64, 48, ssaa=1)
    batch = render_stages(clevr, opt)
    assert [s.name for s in batch] == ["000000", "000001", "000002"]
    for s in batch:
        _check_boxes(s)
        assert s.image.shape == (48, 64, 3) and s.image.dtype == np.uint8
        assert s.depth.dtype == np.float32 and s.instance.dtype == np.int32 and s.semantic.dtype == np.uint8
    single = render_stages(clevr[1:2], opt)[0]
    np.testing.assert_array_equal(single.image, batch[1].image)
    np.testing.assert_array_equal(single.instance, batch[1].instance)
    assert single.objects == batch[1].objects


def test_determinism_with_post_processing(clevr):
    post = PostProcess(blur_sigma=(0.0, 1.0), noise_std=(0.0, 0.05), brightness=(0.8, 1.2), contrast=(0.8, 1.2),
                       saturation=(0.5, 1.5), hue_shift=(-20, 20), jpeg_quality=(50, 90))
    opt = RenderOptions(64, 64, ssaa=2, post=post, seed=3)
    a = render_stages(clevr, opt)
    b = render_stages(clevr, opt)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.depth, y.depth)
        np.testing.assert_array_equal(x.instance, y.instance)
        assert x.objects == y.objects
    plain = render_stages(clevr, RenderOptions(64, 64, ssaa=2))
    assert not np.array_equal(plain[0].image, a[0].image)
    np.testing.assert_array_equal(plain[0].instance, a[0].instance)  # labels do not see post-processing
    c = render_stages(clevr, RenderOptions(64, 64, ssaa=2, post=post, seed=4))
    assert not np.array_equal(c[0].image, a[0].image)


def test_ssaa_keeps_labels_exact(clevr):
    one = render_stages(clevr[:1], RenderOptions(64, 64, ssaa=1))[0]
    three = render_stages(clevr[:1], RenderOptions(64, 64, ssaa=3))[0]
    np.testing.assert_array_equal(one.instance, three.instance)
    np.testing.assert_array_equal(one.depth, three.depth)
    diff = np.abs(one.image.astype(int) - three.image.astype(int))
    assert diff.mean() < 6 and diff.max() > 0  # edges smoothed, interiors alike


def test_min_visible_pixels_drops_objects_and_relations(tmp_path):
    cam = Camera(64, 64, 64, 64, 32, 32, (10, 0, 0), (0, 0, 0))
    g = graphlib.new_graph("clevr", cam)
    graphlib.add_object(g, 0, "cube", (0, 0, 0), 0.0, (2, 2, 2))
    graphlib.add_object(g, 1, "cube", (0, 3, 0), 0.0, (0.1, 0.1, 0.1))
    graphlib.add_object(g, 2, "cube", (0, -3, 0), 0.0, (1, 1, 1))
    graphlib.add_relation(g, 1, "left", 0)
    graphlib.add_relation(g, 2, "right", 0)
    st = new_stage(tmp_path / "m.usda")
    add_camera(st, (10, 0, 0), (0, 0, 0))
    shape(st, "/World/Objects/obj_0000", "Cube", (0, 0, 0), "cube", 0, size=2.0)
    shape(st, "/World/Objects/obj_0001", "Cube", (0, 3, 0), "cube", 1, size=0.1)
    shape(st, "/World/Objects/obj_0002", "Cube", (0, -3, 0), "cube", 2, size=1.0)
    st.GetRootLayer().customLayerData = {"sim2sg": {"graph": graphlib.to_json(g), "categories": ["cube"],
                                                    "predicates": ["left", "right"], "env": "clevr"}}
    st.GetRootLayer().Save()
    s = render_stages([tmp_path / "m.usda"], RenderOptions(64, 64, min_visible_pixels=5))[0]
    assert [o.object_id for o in s.objects] == [0, 2]
    assert s.relations == ((2, "right", 0),)
    assert 2 not in np.unique(s.instance)  # the dropped instance's pixels are background
    _check_boxes(s)
    assert s.objects[1].position == (0.0, -3.0, 0.0) and s.objects[1].size == (1.0, 1.0, 1.0)


def test_truncation_of_a_square_half_outside(tmp_path):
    st = new_stage(tmp_path / "t.usda")
    add_camera(st, (0, -10, 0), (0, 0, 0), focal=20, h_ap=20, v_ap=20)  # 64 px = 10 m wide at 10 m
    # square 4 m wide centred on the right image border (x = 5 m)
    q = quad(st, "/World/Q", [(3, 0, -2), (7, 0, -2), (7, 0, 2), (3, 0, 2)])
    from test_render_helpers import label
    label(q.GetPrim(), "sign")
    st.GetRootLayer().Save()
    o = render_stages([tmp_path / "t.usda"], RenderOptions(64, 64))[0].objects[0]
    assert o.truncation == pytest.approx(0.5, abs=0.03)
    assert o.occlusion == 0.0
    assert o.box[2] == 64


def test_metal_and_rubber_differ_and_shadows_darken(tmp_path):
    st = new_stage(tmp_path / "mr.usda")
    add_camera(st, (0, -6, 3), (0, 0, 0.5), focal=20, h_ap=20, v_ap=20)
    add_lights(st, key=1.5, dome=0.2, rotate=(20, 0, 0))
    from test_render_helpers import ground
    ground(st)
    _, a = shape(st, "/World/A", "Sphere", (-1.2, 0, 0.6), "rubber", radius=0.6)
    _, b = shape(st, "/World/B", "Sphere", (1.2, 0, 0.6), "metal", radius=0.6)
    bind(a, material(st, "/World/Looks/R", (0.7, 0.2, 0.2), roughness=0.9, metallic=0.0))
    bind(b, material(st, "/World/Looks/M", (0.7, 0.2, 0.2), roughness=0.2, metallic=1.0))
    st.GetRootLayer().Save()
    scene = load_scene(tmp_path / "mr.usda", 64, 64)
    lit, flat = render_scenes([scene, scene], ["a", "b"], RenderOptions(64, 64, shadows=True))[0], \
        render_scenes([scene], ["a"], RenderOptions(64, 64, shadows=False))[0]
    rub = lit.image[lit.instance == 1].astype(float)
    met = lit.image[lit.instance == 2].astype(float)
    assert abs(rub.std(0).mean() - met.std(0).mean()) > 3 or abs(rub.mean() - met.mean()) > 10
    assert met.max() >= 250  # a sharp highlight on the metal ball
    ground_px = (lit.instance == 0) & np.isfinite(lit.depth)
    darker = (flat.image.astype(int).sum(-1) - lit.image.astype(int).sum(-1))[ground_px]
    assert (darker > 30).sum() > 10  # a shadow on the ground
    assert (darker < -3).sum() == 0  # shadows only darken


def test_post_process_from_dict():
    p = PostProcess.from_dict({"blur_sigma": [0, 1.5], "jpeg_quality": 75, "hue_shift": [-10, 10]})
    assert p.blur_sigma == (0.0, 1.5) and p.jpeg_quality == (75.0, 75.0) and p.noise_std == (0.0, 0.0)
    with pytest.raises(InputError):
        PostProcess.from_dict({"blur": [0, 1]})
    with pytest.raises(InputError):
        PostProcess.from_dict({"noise_std": [0.2, 0.1]})
    with pytest.raises(InputError):
        PostProcess.from_dict({"jpeg_quality": [50, 120]})


def test_fragments_shapes_and_empty_pixels():
    from sim2sg.render.raster import ScreenTriangles, rasterize

    xyz = torch.tensor([[[2.0, 2.0, 1.0], [14.0, 2.0, 1.0], [2.0, 14.0, 1.0]]])
    tris = ScreenTriangles(xyz, torch.tensor([0]), torch.eye(3)[None], torch.tensor([0]))
    f = rasterize(tris, 2, 16, 16)
    assert f.pix_to_face.shape == (2, 16, 16) and f.zbuf.shape == (2, 16, 16) and f.bary_coords.shape == (2, 16, 16, 3)
    hit = f.pix_to_face[0] >= 0
    # right triangle with legs of 12 px: pixel centres strictly inside plus the diagonal
    assert 70 <= int(hit.sum()) <= 12 * 13 / 2 + 1
    assert (f.pix_to_face[1] == -1).all() and torch.isinf(f.zbuf[1]).all()
    np.testing.assert_allclose(f.bary_coords[0][hit].sum(-1).numpy(), 1.0, atol=1e-5)


def test_chunked_candidates_give_the_same_buffers(monkeypatch):
    """`rasterize` / `depth_map` process the candidates in chunks of whole segments (bounded
    memory per call): any chunk size gives the same fragments and depth map, bit for bit."""
    from sim2sg.render import raster

    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(40, 3, 3, generator=g) * torch.tensor([40.0, 30.0, 4.0]) + torch.tensor([-5.0, -5.0, 0.5])
    tris = raster.ScreenTriangles(xyz, torch.arange(40), torch.eye(3).expand(40, 3, 3),
                                  torch.arange(40) % 2)

    def render():
        f = raster.rasterize(tris, 2, 24, 32)
        return f.pix_to_face, f.zbuf, f.bary_coords, raster.depth_map(xyz, tris.scene, 2, 24, 32)

    whole = render()
    for lanes in (1, 5, 64):
        monkeypatch.setattr(raster, "_CHUNK_LANES", lanes)
        for a, b in zip(whole, render()):
            assert torch.equal(a.view(torch.int32) if a.is_floating_point() else a,
                               b.view(torch.int32) if b.is_floating_point() else b)
