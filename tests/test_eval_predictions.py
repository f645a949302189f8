"""Bad predictions files: one InputError naming the file and the field."""

from __future__ import annotations

import copy
import json

import pytest
from test_eval_relations import make_labels, pred_image, preds

from sim2sg.errors import InputError
from sim2sg.eval import evaluate, ground_truth_from_labels, load_predictions

A, B = [0, 0, 10, 10], [20, 0, 30, 10]


def good():
    return preds(pred_image(0, [("cube", A, 0.9), ("sphere", B, 0.8)], [(0, 1, {"left": 0.7})]))


def gt():
    return ground_truth_from_labels(make_labels([([("cube", A), ("sphere", B)], [(0, "left", 1)])]))


def set_path(d, path, value):
    for key in path[:-1]:
        d = d[key]
    if value is DELETE:
        del d[path[-1]]
    else:
        d[path[-1]] = value


DELETE = object()
NAN = float("nan")
IM = ("images", 0)
OB = IM + ("objects", 0)
REL = IM + ("relations", 0)

CASES = [  # (path, value, field named in the error)
    (("format",), "coco", "format"),
    (("version",), 2, "version"),
    (("predicate_names",), [], "predicate_names"),
    (("predicate_names", 0), "none", "predicate_names[0]"),
    (("predicate_names", 2), "front", "predicate_names"),  # duplicate name
    (("images",), {}, "images"),
    (IM + ("image_id",), True, "images[0].image_id"),
    (IM + ("image_id",), DELETE, "images[0]"),  # neither image_id nor file_name
    (IM + ("objects",), DELETE, "images[0].objects"),
    (OB + ("box",), [0, 0, 10], "images[0].objects[0].box"),
    (OB + ("box",), [10, 0, 5, 10], "images[0].objects[0].box"),  # x2 < x1
    (OB + ("box",), [0, 0, NAN, 10], "images[0].objects[0].box"),
    (OB + ("box",), [0, 0, "10", 10], "images[0].objects[0].box"),
    (OB + ("category",), 3, "images[0].objects[0].category"),
    (OB + ("score",), NAN, "images[0].objects[0].score"),
    (OB + ("score",), 1.5, "images[0].objects[0].score"),
    (OB + ("score",), "high", "images[0].objects[0].score"),
    (REL + ("subject",), 2, "images[0].relations[0].subject"),
    (REL + ("object",), -1, "images[0].relations[0].object"),
    (REL + ("object",), 0, "images[0].relations[0]"),  # subject == object
    (REL + ("scores",), [0.1, 0.2], "images[0].relations[0].scores"),
    (REL + ("scores", 3), NAN, "images[0].relations[0].scores[3]"),
    (REL + ("scores", 3), -0.1, "images[0].relations[0].scores[3]"),
]


@pytest.mark.parametrize("path,value,field", CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_bad_field(tmp_path, path, value, field):
    data = good()
    set_path(data, path, value)
    f = tmp_path / "preds.json"
    f.write_text(json.dumps(data))  # NaN is written as the JSON extension `NaN`, which json reads
    with pytest.raises(InputError) as e:
        load_predictions(f)
    assert e.value.field == field
    assert str(f) in str(e.value)


def test_duplicate_pair(tmp_path):
    data = good()
    data["images"][0]["relations"].append(copy.deepcopy(data["images"][0]["relations"][0]))
    f = tmp_path / "p.json"
    f.write_text(json.dumps(data))
    with pytest.raises(InputError, match="twice") as e:
        load_predictions(f)
    assert e.value.field == "images[0].relations[1]"


@pytest.mark.parametrize("text", ["", "{", "[1, 2]"])
def test_not_a_predictions_object(tmp_path, text):
    f = tmp_path / "p.json"
    f.write_text(text)
    with pytest.raises(InputError):
        load_predictions(f)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_predictions(tmp_path / "nope.json")


MATCH_CASES = [  # checks against the ground truth
    (OB + ("category",), "pyramid", "images[0].objects[0].category", "unknown category"),
    (("predicate_names", 3), "above", "predicate_names[3]", "unknown predicate"),
    (IM + ("image_id",), 42, "images[0].image_id", "no ground-truth image"),
]


@pytest.mark.parametrize("path,value,field,message", MATCH_CASES)
def test_mismatch_with_ground_truth(tmp_path, path, value, field, message):
    data = good()
    set_path(data, path, value)
    f = tmp_path / "p.json"
    f.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message) as e:
        evaluate(gt(), load_predictions(f))
    assert e.value.field == field and str(f) in str(e.value)


def test_missing_predicate_and_duplicate_image():
    data = good()
    data["predicate_names"] = data["predicate_names"][:-1]
    for r in data["images"][0]["relations"]:
        r["scores"] = r["scores"][:-1]
    with pytest.raises(InputError, match="missing"):
        evaluate(gt(), data)
    data = good()
    data["images"].append(copy.deepcopy(data["images"][0]))
    with pytest.raises(InputError, match="second entry") as e:
        evaluate(gt(), data)
    assert e.value.field == "images[1].image_id"


def test_matching_by_file_name_and_case_insensitive_category():
    data = good()
    im = data["images"][0]
    del im["image_id"]
    im["file_name"] = "000000.png"  # stem of images/000000.png
    im["objects"][0]["category"] = "Cube"
    m = evaluate(gt(), data)
    assert m["images_without_predictions"] == 0
    assert m["relations"]["graph_constraint"]["R@20"] == 1.0


def test_predicate_order_in_the_file_does_not_matter():
    data = good()
    order = ["__background__", "right", "left", "behind", "front"]
    old = data["predicate_names"]
    data["predicate_names"] = order
    for r in data["images"][0]["relations"]:
        r["scores"] = [r["scores"][old.index(n)] for n in order]
    assert evaluate(gt(), data)["relations"]["graph_constraint"]["R@20"] == 1.0
