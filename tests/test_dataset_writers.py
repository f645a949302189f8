"""Dataset writers: PNG encodings, scene-graph, KITTI and CLEVR files, labels.json (hand-built samples)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from sim2sg.dataset import clevr, kitti, writers
from sim2sg.dataset import coco as labels
from sim2sg.dataset.toy import three_object_sample, toy_camera
from sim2sg.render.sample import ObjectLabel
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera

WRITERS = ("clevr", "coco", "kitti", "sg")


@pytest.fixture()
def dataset(tmp_path):
    """Two images written with every writer, and labels.json assembled."""
    for i in range(2):
        frag = writers.write_sample(tmp_path, three_object_sample(f"{i:06d}"), i, WRITERS)
        labels.write_fragment(tmp_path, f"{i:06d}", frag)
    labels.assemble(tmp_path, ["000000", "000001"])
    return tmp_path


def test_depth_png_scale_and_sentinels():
    d = np.array([[np.inf, 0.0, 0.0002, 1.2344], [65.535, 70.0, np.nan, 2.0]], np.float32)
    png = writers.depth_to_png16(d)
    assert png.dtype == np.uint16
    assert png.tolist() == [[0, 0, 1, 1234], [65535, 65535, 0, 2000]]
    back = writers.png16_to_depth(png)
    assert np.isinf(back[0, 0]) and back[0, 3] == pytest.approx(1.234)


def test_pngs_read_back_exactly(dataset):
    s = three_object_sample("000000")
    rgb = cv2.imread(str(dataset / "images/000000.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    inst = cv2.imread(str(dataset / "instances/000000.png"), cv2.IMREAD_UNCHANGED)
    sem = cv2.imread(str(dataset / "semantics/000000.png"), cv2.IMREAD_UNCHANGED)
    depth = cv2.imread(str(dataset / "depth/000000.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(rgb, s.image)
    assert inst.dtype == np.uint16 and np.array_equal(inst, s.instance)
    assert sem.dtype == np.uint8 and np.array_equal(sem, s.semantic)
    assert depth.dtype == np.uint16 and np.array_equal(depth, writers.depth_to_png16(s.depth))
    assert (dataset / "kitti/image_2/000000.png").read_bytes() == (dataset / "images/000000.png").read_bytes()


def test_scene_graph_is_restricted_to_visible_objects(dataset):
    g = sg.read_graph(dataset / "scene_graphs/000000.json")
    s = three_object_sample()
    assert sorted(g.nodes) == [0, 1, 2]  # object 3 is hidden
    for o in s.objects:
        assert g.nodes[o.object_id]["box"] == o.box
    assert sg.relations(g) == [(0, "front", 1), (0, "left", 2), (1, "behind", 0), (2, "right", 1)]
    assert g.graph["camera"] == s.camera
    assert g.nodes[0]["attributes"] == {"color": "red", "size": "large"}


# ---- KITTI ------------------------------------------------------------------------------------
def test_kitti_label_has_15_typed_fields(dataset):
    lines = (dataset / "kitti/label_2/000000.txt").read_text().splitlines()
    s = three_object_sample()
    assert len(lines) == len(s.objects) == 3
    for line, o in zip(lines, s.objects):
        f = line.split(" ")
        assert len(f) == 15
        assert f[0] == o.category.capitalize()
        truncated, occluded = float(f[1]), int(f[2])
        assert 0.0 <= truncated <= 1.0 and occluded in (0, 1, 2, 3)
        vals = [float(x) for x in f[3:]]
        assert all(math.isfinite(v) for v in vals)
        assert vals[1:5] == pytest.approx(list(o.box), abs=0.006)
        assert vals[5:8] == pytest.approx([o.size[2], min(o.size[:2]), max(o.size[:2])], abs=0.006)
        assert -math.pi <= vals[0] <= math.pi and -math.pi <= vals[11] <= math.pi
    # object 1 (instance 2) is half hidden by object 2's rectangle -> largely occluded
    assert [int(x.split()[2]) for x in lines] == [kitti.occlusion_state(o.occlusion) for o in s.objects]


def test_kitti_types_and_occlusion_states():
    assert [kitti.kitti_type(c) for c in ("car", "pedestrian", "truck", "person_sitting", "traffic light")] == [
        "Car", "Pedestrian", "Truck", "Person_sitting", "Traffic_light"]
    assert [kitti.occlusion_state(x) for x in (0.0, 0.09, 0.1, 0.49, 0.5, 1.0)] == [0, 0, 1, 1, 2, 2]


def test_kitti_3d_fields_for_a_level_camera():
    # Level camera 1.5 m up looking along world +Y: camera x = world +X, y = world -Z, z = world +Y.
    cam = Camera(100, 50, 50.0, 50.0, 50.0, 25.0, (0.0, 0.0, 1.5), (0.0, 10.0, 1.5))
    lab = ObjectLabel(1, 0, "car", 1, (0, 0, 1, 1), 1, 0.0, 0.0, (4.0, 10.0, 0.0), 90.0, (4.0, 1.8, 1.5))
    (h, w, l), (x, y, z), ry, alpha = kitti.box3d_camera(lab, cam)
    assert (h, w, l) == (1.5, 1.8, 4.0)
    assert (x, y, z) == pytest.approx((4.0, 1.5, 10.0))
    assert ry == pytest.approx(-math.pi / 2)  # driving away from the camera
    assert alpha == pytest.approx(-math.pi / 2 - math.atan2(4.0, 10.0))
    lab0 = ObjectLabel(1, 0, "car", 1, (0, 0, 1, 1), 1, 0.0, 0.0, (0.0, 10.0, 0.0), 0.0, (4.0, 1.8, 1.5))
    assert kitti.box3d_camera(lab0, cam)[2] == pytest.approx(0.0)  # heading = camera +x
    # a car long along its local y (driving env) at yaw 0 heads along world +Y: away from the camera
    lab_y = ObjectLabel(1, 0, "car", 1, (0, 0, 1, 1), 1, 0.0, 0.0, (0.0, 10.0, 0.0), 0.0, (1.8, 4.0, 1.5))
    (h, w, l), _, ry, _ = kitti.box3d_camera(lab_y, cam)
    assert (h, w, l) == (1.5, 1.8, 4.0) and ry == pytest.approx(-math.pi / 2)


def test_kitti_calib_lines(dataset):
    rows = dict(line.split(": ") for line in (dataset / "kitti/calib/000000.txt").read_text().splitlines())
    assert list(rows) == ["P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"]
    n = {k: [float(x) for x in v.split()] for k, v in rows.items()}
    assert [len(n[k]) for k in rows] == [12, 12, 12, 12, 9, 12, 12]
    cam = toy_camera()
    p2 = np.array(n["P2"]).reshape(3, 4)
    assert np.allclose(p2[:, :3], cam.intrinsics()) and np.allclose(p2[:, 3], 0)
    # Tr_velo_to_cam maps world points to the camera frame
    tr = np.array(n["Tr_velo_to_cam"]).reshape(3, 4)
    pts = np.array([[1.0, 2.0, 0.5], [-3.0, 0.0, 0.0]])
    assert np.allclose(pts @ tr[:, :3].T + tr[:, 3], cam.world_to_camera(pts), atol=1e-9)


# ---- CLEVR ------------------------------------------------------------------------------------
def test_clevr_relationships_hand_worked():
    dirs = {"left": [-1.0, 0.0, 0.0], "right": [1.0, 0.0, 0.0], "behind": [0.0, 1.0, 0.0],
            "front": [0.0, -1.0, 0.0]}
    coords = np.array([[0.0, 0.0, 0.35], [1.0, 0.0, 0.35], [0.1, 2.0, 0.7]])
    r = clevr.compute_relationships(coords, dirs)
    # r[name][i] = objects that are `name` of object i
    assert r["left"] == [[], [0, 2], []]
    assert r["right"] == [[1], [], [1]]  # 0.1 - 0 = 0.1 is within eps 0.2: C is not right of A
    assert r["behind"] == [[2], [2], []]
    assert r["front"] == [[], [], [0, 1]]


def test_clevr_scene_fields(dataset):
    scene = json.loads((dataset / "clevr/scenes/000000.json").read_text())
    assert set(scene) == {"split", "image_index", "image_filename", "objects", "directions", "relationships"}
    assert scene["image_index"] == 0 and scene["image_filename"] == "000000.png"
    assert scene["directions"]["behind"] == pytest.approx([0, 1, 0]) and scene["directions"]["left"] == pytest.approx([-1, 0, 0])
    assert set(scene["relationships"]) == {"behind", "front", "left", "right"}
    objs = scene["objects"]
    assert [o["shape"] for o in objs] == ["cube", "sphere", "cylinder"]
    assert [o["color"] for o in objs] == ["red", "blue", "gray"]
    assert [o["size"] for o in objs] == ["large", "small", "large"]
    assert [o["material"] for o in objs] == ["rubber", "metal", "rubber"]
    assert objs[0]["3d_coords"] == pytest.approx([-3.0, 0.0, 0.5])
    assert objs[2]["rotation"] == 200.0
    u, v, z = objs[1]["pixel_coords"]
    uv, depth = toy_camera().project(np.array([[0.0, 2.0, 0.35]]))
    assert (u, v) == (round(uv[0, 0]), round(uv[0, 1])) and z == pytest.approx(depth[0])
    assert isinstance(u, int) and isinstance(v, int)
    # sphere (1) at y=2 is behind cube (0) at y=0 and cylinder (2) at y=-1
    assert scene["relationships"]["behind"][0] == [1] and scene["relationships"]["behind"][2] == [0, 1]
    combined = json.loads((dataset / "clevr/CLEVR_scenes.json").read_text())
    assert set(combined) == {"info", "scenes"} and [s["image_index"] for s in combined["scenes"]] == [0, 1]


# ---- labels.json -------------------------------------------------------------------------------
def test_labels_json_validates_and_loads_in_pycocotools(dataset):
    from pycocotools.coco import COCO

    data = labels.load_labels(dataset / "labels.json")
    assert [a["id"] for a in data["annotations"]] == list(range(6))
    assert data["info"]["env"] == "clevr"
    assert [c["name"] for c in data["categories"]] == ["cube", "sphere", "cylinder"]
    coco = COCO(str(dataset / "labels.json"))
    assert len(coco.getAnnIds(imgIds=[1])) == 3
    s = three_object_sample()
    for a, o in zip(coco.loadAnns(coco.getAnnIds(imgIds=[0])), s.objects):
        assert np.array_equal(coco.annToMask(a).astype(bool), s.instance == o.instance_id)
        x1, y1, x2, y2 = o.box
        assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1] and a["area"] == o.visible_pixels
    # relationships point at annotations of their own image; hidden object 3's relation is gone
    ann = {a["id"]: a for a in data["annotations"]}
    assert len(data["relationships"]) == 8
    for r in data["relationships"]:
        assert ann[r["subject_id"]]["image_id"] == ann[r["object_id"]]["image_id"] == r["image_id"]
    r0 = data["relationships"][0]
    assert (ann[r0["subject_id"]]["object_id"], data["predicate_categories"][r0["predicate_id"] - 1]["name"],
            ann[r0["object_id"]]["object_id"]) == (0, "front", 1)
    assert labels.validate_dataset(dataset) == {"images": 2, "annotations": 6, "relationships": 8}


def test_validate_dataset_catches_box_mask_mismatch(dataset):
    data = json.loads((dataset / "labels.json").read_text())
    data["annotations"][1]["bbox"][2] -= 1
    (dataset / "labels.json").write_text(json.dumps(data))
    with pytest.raises(Exception) as e:
        labels.validate_dataset(dataset)
    assert "annotations[1].bbox" in str(e.value) and "labels.json" in str(e.value)


def _mutations():
    def m(fn, field):
        return pytest.param(fn, field, id=field)

    return [
        m(lambda d: d.pop("relationships"), "relationships"),
        m(lambda d: d["info"].update(version=2), "info.version"),
        m(lambda d: d["categories"][1].update(id=5), "categories[1].id"),
        m(lambda d: d["predicate_categories"][0].update(name=""), "predicate_categories[0].name"),
        m(lambda d: d["images"][1].update(id=0), "images[1].id"),
        m(lambda d: d["images"][0].update(width=0), "images[0].width"),
        m(lambda d: d["annotations"][2].update(id=1), "annotations[2].id"),
        m(lambda d: d["annotations"][0].update(image_id=9), "annotations[0].image_id"),
        m(lambda d: d["annotations"][0].update(category_id=0), "annotations[0].category_id"),
        m(lambda d: d["annotations"][0].update(bbox=[60.0, 0.0, 10.0, 5.0]), "annotations[0].bbox"),
        m(lambda d: d["annotations"][0].update(bbox=[1.0, 1.0, 0.0, 5.0]), "annotations[0].bbox"),
        m(lambda d: d["annotations"][0].update(bbox=[1.0, "a", 2.0, 5.0]), "annotations[0].bbox[1]"),
        m(lambda d: d["annotations"][0].update(area=-1), "annotations[0].area"),
        m(lambda d: d["annotations"][0].update(iscrowd=True), "annotations[0].iscrowd"),
        m(lambda d: d["annotations"][0]["segmentation"].update(size=[1, 2]), "annotations[0].segmentation.size"),
        m(lambda d: d["annotations"][0].update(occlusion=1.5), "annotations[0].occlusion"),
        m(lambda d: d["annotations"][0].update(instance_id=0), "annotations[0].instance_id"),
        m(lambda d: d["relationships"][0].update(subject_id=99), "relationships[0].subject_id"),
        m(lambda d: d["relationships"][0].update(object_id=3), "relationships[0].object_id"),  # other image
        m(lambda d: d["relationships"][0].update(predicate_id=7), "relationships[0].predicate_id"),
        m(lambda d: d["relationships"][1].update(id=0), "relationships[1].id"),
    ]


@pytest.mark.parametrize("mutate, field", _mutations())
def test_bad_labels_name_file_and_field(dataset, mutate, field):
    from sim2sg.errors import InputError

    data = json.loads((dataset / "labels.json").read_text())
    mutate(data)
    bad = dataset / "bad_labels.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        labels.load_labels(bad)
    assert e.value.field == field and e.value.source == str(bad)


def test_bad_labels_file_level_errors(tmp_path):
    from sim2sg.errors import InputError

    with pytest.raises(InputError, match="file not found"):
        labels.load_labels(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        labels.load_labels(tmp_path / "x.json")


def test_parse_writers():
    assert writers.parse_writers("sg,kitti") == ("coco", "kitti", "sg")
    with pytest.raises(ValueError, match="unknown writer 'voc'"):
        writers.parse_writers("sg,voc")
