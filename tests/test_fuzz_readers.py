"""Property-based fuzzing of the readers (issue #20): environment TOML, scene-graph JSON,
labels.json, predictions JSON and USD stages. Whatever the bytes, a reader returns or raises one
`InputError` naming the file; never another exception. Bounded (few examples, no deadline
surprises) so the module runs in seconds."""

import json
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sim2sg.errors import InputError  # noqa: E402
from sim2sg.scene import graph as sg  # noqa: E402
from sim2sg.scene.environment import load_env  # noqa: E402
from sim2sg.scene.sdr import sample_scene, scene_rng  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# JSON-like values, including the awkward ones (huge and non-finite numbers, deep lists)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8))
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)),
                      max_leaves=12)


def _mutate(doc, path_choice: int, value):
    """Replace one nested field of a JSON-like document (dicts and lists) by `value`."""
    nodes = []

    def walk(x):
        if isinstance(x, dict):
            for k in x:
                nodes.append((x, k))
                walk(x[k])
        elif isinstance(x, list):
            for i in range(len(x)):
                nodes.append((x, i))
                walk(x[i])

    walk(doc)
    if nodes:
        parent, key = nodes[path_choice % len(nodes)]
        parent[key] = value
    return doc


def _only_input_errors(fn, source: Path):
    try:
        fn()
    except InputError as e:
        assert str(source.name) in str(e) or e.source in (str(source), "<input>") or source.name in e.source, e


GRAPH = json.loads(sg.to_json(sample_scene(load_env("clevr"), scene_rng(0, 0))))


@FUZZ
@given(choice=st.integers(0, 10_000), value=values)
def test_scene_graph_reader(tmp_path_factory, choice, value):
    p = tmp_path_factory.mktemp("g") / "g.json"
    p.write_text(json.dumps(_mutate(json.loads(json.dumps(GRAPH)), choice, value)))
    _only_input_errors(lambda: sg.read_graph(p, ["cube", "sphere", "cylinder"], ["front", "behind", "left", "right"]), p)


@FUZZ
@given(data=st.binary(max_size=200))
def test_json_readers_on_raw_bytes(tmp_path_factory, data):
    from sim2sg.dataset.coco import load_labels
    from sim2sg.eval.predictions import load_predictions

    p = tmp_path_factory.mktemp("b") / "x.json"
    p.write_bytes(data)
    for reader in (sg.read_graph, load_labels, load_predictions):
        _only_input_errors(lambda: reader(p), p)


ENV_TEXT = (ROOT / "scenes" / "clevr.toml").read_text(encoding="utf-8")


@FUZZ
@given(cut=st.integers(0, len(ENV_TEXT)), junk=st.text(max_size=12), start=st.integers(0, len(ENV_TEXT)))
def test_environment_reader(tmp_path_factory, cut, junk, start):
    p = tmp_path_factory.mktemp("e") / "e.toml"
    lo, hi = sorted((cut, start))
    p.write_text(ENV_TEXT[:lo] + junk + ENV_TEXT[hi:], encoding="utf-8")
    _only_input_errors(lambda: load_env(p), p)


@FUZZ
@given(choice=st.integers(0, 10_000), value=values)
def test_environment_reader_on_field_values(tmp_path_factory, choice, value):
    import tomllib

    raw = _mutate(tomllib.loads(ENV_TEXT), choice, value)
    from sim2sg.scene.environment import parse_env

    try:
        parse_env(raw, "e.toml")
    except InputError as e:
        assert e.source == "e.toml"


@pytest.fixture(scope="module")
def labels_and_predictions(tmp_path_factory):
    from sim2sg.dataset import render_job
    from sim2sg.dataset.toy import three_object_sample

    out = tmp_path_factory.mktemp("d")
    render_job.write_samples(out, [three_object_sample("000000"), three_object_sample("000001")])
    labels = json.loads((out / "labels.json").read_text())
    n = len(labels["predicate_categories"])
    preds = {"format": "sim2sg-predictions", "version": 1, "categories": [c["name"] for c in labels["categories"]],
             "predicate_names": ["__background__"] + [p["name"] for p in labels["predicate_categories"]],
             "images": [{"image_id": 0, "file_name": "images/000000.png",
                         "objects": [{"box": [1, 2, 10, 12], "category": labels["categories"][0]["name"], "score": 0.9},
                                     {"box": [3, 4, 20, 22], "category": labels["categories"][0]["name"], "score": 0.8}],
                         "relations": [{"subject": 0, "object": 1, "scores": [0.1] + [0.5] * n}]}]}
    return labels, preds


@FUZZ
@given(choice=st.integers(0, 10_000), value=values)
def test_labels_reader(tmp_path_factory, labels_and_predictions, choice, value):
    from sim2sg.dataset.coco import load_labels

    p = tmp_path_factory.mktemp("l") / "labels.json"
    p.write_text(json.dumps(_mutate(json.loads(json.dumps(labels_and_predictions[0])), choice, value)))
    _only_input_errors(lambda: load_labels(p), p)


@FUZZ
@given(choice=st.integers(0, 10_000), value=values)
def test_predictions_reader(tmp_path_factory, labels_and_predictions, choice, value):
    from sim2sg.eval.predictions import load_predictions

    p = tmp_path_factory.mktemp("p") / "predictions.json"
    p.write_text(json.dumps(_mutate(json.loads(json.dumps(labels_and_predictions[1])), choice, value)))
    _only_input_errors(lambda: load_predictions(p), p)


@pytest.fixture(scope="module")
def stage_text(tmp_path_factory):
    from sim2sg.scene.look import randomize_look
    from sim2sg.usd.compile import compile_graph, look_rng

    e = load_env("clevr")
    g = sample_scene(e, scene_rng(0, 1))
    stage, _ = compile_graph(g, e, randomize_look(g, e, look_rng(0, "f")))
    return stage.GetRootLayer().ExportToString()


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10**9), junk=st.sampled_from(["", "inf", "1e308", "-", "(", "]", "@x.usda@", "\x00", "nan", "3e38"]),
       span=st.integers(0, 40))
def test_usd_reader(tmp_path_factory, stage_text, cut, junk, span):
    from sim2sg.usd.read import load_scene
    from sim2sg.usd.stage import read_graph_from_stage

    i = cut % len(stage_text)
    p = tmp_path_factory.mktemp("u") / "s.usda"
    p.write_text(stage_text[:i] + junk + stage_text[i + span:], encoding="utf-8")
    _only_input_errors(lambda: load_scene(p, 16, 16), p)
    _only_input_errors(lambda: read_graph_from_stage(p), p)


def test_the_fuzzed_documents_start_valid(tmp_path, labels_and_predictions, stage_text):
    """The fuzzers mutate valid documents, so that they reach past the first check."""
    import tomllib

    from sim2sg.dataset.coco import validate_labels
    from sim2sg.eval.predictions import parse_predictions
    from sim2sg.scene.environment import parse_env
    from sim2sg.usd.read import load_scene

    validate_labels(labels_and_predictions[0])
    parse_predictions(labels_and_predictions[1])
    sg.from_dict(GRAPH)
    parse_env(tomllib.loads(ENV_TEXT))
    (tmp_path / "s.usda").write_text(stage_text)
    load_scene(tmp_path / "s.usda", 16, 16)
