"""SDR sampling: valid graphs for every environment, reproducible per scene, rules respected."""

import math
from pathlib import Path

import numpy as np
import pytest

from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.relations import derive_relations
from sim2sg.scene.sdr import road_geometry, sample_scene, sample_scenes, scene_rng


@pytest.mark.parametrize("name", ["clevr", "clevr-appearance", "clevr-content", "clevr-target",
                                  "dining", "dining-target", "driving", "driving-target"])
def test_every_env_samples_valid_graphs(name):
    env = load_env(name)
    for g in sample_scenes(env, seed=3, count=15):
        g2 = sg.from_json(sg.to_json(g), categories=env.categories, predicates=env.predicates)
        assert sg.to_json(g2) == sg.to_json(g)
        assert len(g) > 0
        # Relations are exactly those derived from the 3D placement.
        assert sg.relations(g) == derive_relations(sg.objects(g), g.graph["camera"], env.predicates,
                                                   env.relation_threshold, env.on_tolerance, env.require_category)


def test_scene_is_reproducible_alone():
    env = load_env("clevr")
    batch = [sg.to_json(g) for g in sample_scenes(env, seed=7, count=6)]
    assert sg.to_json(sample_scene(env, scene_rng(7, 4))) == batch[4]
    assert [sg.to_json(g) for g in sample_scenes(env, seed=7, count=3, start=3)] == batch[3:]
    assert batch[0] != sg.to_json(sample_scene(env, scene_rng(8, 0)))


def test_clevr_rules():
    env = load_env("clevr")
    counts = []
    for g in sample_scenes(env, seed=0, count=40):
        objs = sg.objects(g)
        counts.append(len(objs))
        dirs = g.graph["camera"].ground_directions()
        for i, a in objs:
            assert a["attributes"]["size"] in ("small", "large") and a["material"] in ("rubber", "metal")
            assert -3 <= a["position"][0] <= 3 and -3 <= a["position"][1] <= 3 and a["position"][2] == 0
            for j, b in objs:
                if j <= i:
                    continue
                d = np.subtract(a["position"][:2], b["position"][:2])
                ra, rb = max(a["size"][:2]) / 2, max(b["size"][:2]) / 2
                assert np.hypot(*d) - ra - rb >= 0.25 - 1e-9
                for v in dirs.values():  # CLEVR's margin: no pair is nearly aligned along a direction
                    m = abs(d @ v[:2])
                    assert not (0 < m < 0.4)
    assert min(counts) >= 3 and max(counts) <= 10 and len(set(counts)) > 3


def test_dining_laptops_are_on_tables_and_chairs_face_them():
    env = load_env("dining")
    n_on = 0
    for g in sample_scenes(env, seed=1, count=30):
        for i, a in sg.objects(g):
            if a["category"] == "laptop":
                supports = [o for s, p, o in sg.relations(g) if s == i and p == "on"]
                assert len(supports) == 1 and g.nodes[supports[0]]["category"] == "table"
                n_on += 1
            if a["category"] == "chair":
                # The chair's front (local -Y) points at the nearest point of some table's
                # footprint, within the 20 degree yaw jitter of the environment.
                yaw = math.radians(a["yaw"])
                front = np.array([math.sin(yaw), -math.cos(yaw)])
                best = max(front @ _unit(_nearest_footprint_point(b, a["position"][:2]) - a["position"][:2])
                           for _, b in sg.objects(g) if b["category"] == "table")
                assert best >= math.cos(math.radians(20.5))
    assert n_on > 10


def test_driving_layout_and_car_relations():
    env = load_env("driving")
    for g in sample_scenes(env, seed=2, count=20):
        ctx = g.graph["context"]
        geo = road_geometry(ctx)
        cam = g.graph["camera"]
        assert cam.width == 1242 and cam.height == 375 and abs(cam.position[2] - 1.65) <= 0.05 + 1e-9
        for i, a in sg.objects(g):
            x = a["position"][0]
            if a["category"] == "car":
                assert abs(x) <= geo["half_width"] + 0.5
            elif a["category"] == "pedestrian":
                assert geo["half_width"] <= abs(x) <= geo["half_width"] + ctx["sidewalk_width"]
                assert a["position"][2] == ctx["curb_height"]
            else:
                assert abs(x) >= geo["half_width"] + ctx["sidewalk_width"]
        for s, _, o in sg.relations(g):
            assert "car" in (g.nodes[s]["category"], g.nodes[o]["category"])


def _unit(v):
    return v / np.linalg.norm(v)


def _nearest_footprint_point(b, p):
    t = math.radians(b["yaw"])
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    local = rot.T @ (np.asarray(p) - b["position"][:2])
    local = np.clip(local, -np.asarray(b["size"][:2]) / 2, np.asarray(b["size"][:2]) / 2)
    return rot @ local + b["position"][:2]


def test_an_environment_that_cannot_place_its_objects_is_one_clear_error(tmp_path):
    from sim2sg.errors import InputError

    text = (Path(__file__).parents[1] / "scenes" / "clevr.toml").read_text()
    text = text.replace("total = [3, 10]", "total = [40, 40]").replace("max_restarts = 100", "max_restarts = 2")
    p = tmp_path / "crowded.toml"
    p.write_text(text)
    env = load_env(p)
    with pytest.raises(InputError) as e:
        sample_scene(env, scene_rng(0, 0))
    assert e.value.field == "placement" and "crowded.toml" in str(e.value)
