"""Scene-graph JSON: round trip and one clear error per bad input, naming file and field."""

import json
import math

import pytest

from sim2sg.errors import InputError
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera

CAM = Camera(64, 48, 50.0, 50.0, 32.0, 24.0, (0.0, -10.0, 3.0), (0.0, 0.0, 0.0))
CATS = ["cube", "sphere"]
PREDS = ["left", "right", "front", "behind"]


def small_graph():
    g = sg.new_graph("clevr", CAM, {"kind": "ground", "extent": 10.0})
    sg.add_object(g, 0, "cube", (0, 0, 0), 30, (1, 1, 1), color=(1, 0, 0), material="rubber",
                  texture="plain", attributes={"color": "red", "size": "large"})
    sg.add_object(g, 1, "sphere", (2, 0, 0), 0, (0.7, 0.7, 0.7), box=(1, 2, 10, 20), score=0.5)
    sg.add_relation(g, 1, "right", 0)
    sg.add_relation(g, 1, "front", 0)  # several predicates on one ordered pair
    sg.add_relation(g, 0, "left", 1)
    return g


def test_round_trip_is_exact(tmp_path):
    g = small_graph()
    p = tmp_path / "g.json"
    sg.write_graph(p, g)
    g2 = sg.read_graph(p, CATS, PREDS)
    assert sg.to_json(g2) == p.read_text()
    assert sg.relations(g2) == [(0, "left", 1), (1, "front", 0), (1, "right", 0)]
    assert g2.nodes[1]["box"] == (1, 2, 10, 20) and g2.nodes[0]["color"] == (1, 0, 0)
    assert g2.graph["camera"] == CAM


def _bad(tmp_path, mutate, text=None):
    d = sg.to_dict(small_graph())
    if mutate:
        mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(text if text is not None else json.dumps(d))
    with pytest.raises(InputError) as e:
        sg.read_graph(p, CATS, PREDS)
    assert str(p) in str(e.value)
    return e.value


@pytest.mark.parametrize("mutate,field,words", [
    (lambda d: d["objects"][0].update(category="cone"), "objects[0].category", "unknown category"),
    (lambda d: d["relationships"][0].update(predicate="on"), "relationships[0].predicate", "unknown predicate"),
    (lambda d: d["objects"][1].pop("size"), "objects[1].size", "missing"),
    (lambda d: d.pop("camera"), "camera", "missing"),
    (lambda d: d["objects"][0].update(yaw=math.nan), "objects[0].yaw", "finite"),
    (lambda d: d["objects"][0]["position"].__setitem__(1, math.inf), "objects[0].position[1]", "finite"),
    (lambda d: d["objects"][1]["size"].__setitem__(2, -0.5), "objects[1].size[2]", "positive"),
    (lambda d: d["relationships"].append({"subject": 1, "predicate": "left", "object": 1}), "relationships[3]", "self-relation"),
    (lambda d: d["objects"][1].update(id=0), "objects[1].id", "duplicate"),
    (lambda d: d["objects"][0].update(position="here"), "objects[0].position", "got string"),
    (lambda d: d.update(objects={}), "objects", "expected a list"),
    (lambda d: d["objects"][0].update(id=True), "objects[0].id", "integer"),
    (lambda d: d["objects"][0].update(colour=[1, 0, 0]), "objects[0].colour", "unknown field"),
    (lambda d: d.update(version=2), "version", "unsupported"),
    (lambda d: d["relationships"][0].update(object=7), "relationships[0].object", "no object"),
    (lambda d: d["relationships"].append(dict(d["relationships"][0])), "relationships[3]", "duplicate"),
    (lambda d: d["objects"][1].update(box=[10, 2, 1, 20]), "objects[1].box", "x2 >= x1"),
    (lambda d: d["objects"][1].update(score=1.5), "objects[1].score", "[0, 1]"),
    (lambda d: d["camera"].update(fx=0), "camera.fx", "positive"),
])
def test_bad_input_names_file_and_field(tmp_path, mutate, field, words):
    err = _bad(tmp_path, mutate)
    assert err.field == field
    assert words in err.message


def test_not_json_and_missing_file(tmp_path):
    err = _bad(tmp_path, None, text="{not json")
    assert "not valid JSON" in err.message
    with pytest.raises(InputError, match="file not found"):
        sg.read_graph(tmp_path / "nope.json")


def test_nan_literal_in_file_is_rejected(tmp_path):
    text = sg.to_json(small_graph()).replace('"yaw": 30.0', '"yaw": NaN')
    err = _bad(tmp_path, None, text=text)
    assert err.field == "objects[0].yaw"
