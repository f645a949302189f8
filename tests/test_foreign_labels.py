"""Labels from other tools: COCO without sim2sg's fields (as pycocotools' examples write it) and
Visual-Genome-style scene-graph lists evaluate like sim2sg's own labels.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.dataset.coco import load_labels
from sim2sg.dataset.render_job import write_samples
from sim2sg.dataset.toy import three_object_sample
from sim2sg.errors import InputError
from sim2sg.eval import evaluate, load_ground_truth


@pytest.fixture()
def sim2sg_dataset(tmp_path):
    d = tmp_path / "sim2sg"
    write_samples(d, [three_object_sample(f"{i:06d}") for i in range(3)])
    return d


def plain_coco(labels: dict) -> dict:
    """The same dataset as pycocotools' examples write it: no info, no relationships, category ids
    that are not 1..n, polygon segmentations, only the standard annotation fields."""
    new_id = {c["id"]: 10 * c["id"] + 7 for c in labels["categories"]}
    anns = []
    for a in labels["annotations"]:
        x, y, w, h = a["bbox"]
        anns.append({"id": 1000 + a["id"], "image_id": a["image_id"], "category_id": new_id[a["category_id"]],
                     "bbox": [x, y, w, h], "area": a["area"], "iscrowd": 0,
                     "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return {"images": [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in labels["images"]],
            "annotations": anns[::-1],
            "categories": [{"id": new_id[c["id"]], "name": c["name"], "supercategory": "shape"}
                           for c in labels["categories"]][::-1]}


def noisy_predictions(labels: dict) -> dict:
    """Detections near the GT boxes with scores, a few misses and false positives: an AP below 1."""
    names = {c["id"]: c["name"] for c in labels["categories"]}
    rng = np.random.default_rng(0)
    images = []
    for im in labels["images"]:
        objs = []
        for a in labels["annotations"]:
            if a["image_id"] != im["id"]:
                continue
            x, y, w, h = a["bbox"]
            d = rng.normal(0, 1.5, 4)
            objs.append({"box": [x + d[0], y + d[1], x + w + d[2], y + h + d[3]],
                         "category": names[a["category_id"]], "score": float(rng.uniform(0.2, 1))})
        objs.append({"box": [1, 1, 9, 9], "category": names[1], "score": 0.6})
        images.append({"image_id": im["id"], "objects": objs[im["id"] == 0:], "relations": []})
    preds = [p["name"] for p in labels["predicate_categories"]]
    return {"format": "sim2sg-predictions", "version": 1, "predicate_names": ["__background__", *preds],
            "images": images}


def test_plain_coco_gives_the_same_ap_as_sim2sg_labels(sim2sg_dataset, tmp_path):
    labels = json.loads((sim2sg_dataset / "labels.json").read_text())
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps(plain_coco(labels)))
    preds = noisy_predictions(labels)
    ours = evaluate(load_ground_truth(sim2sg_dataset), preds)["detection"]
    theirs = evaluate(load_ground_truth(coco), preds)["detection"]
    assert 0.2 < ours["mAP@0.5"] < 1.0
    assert theirs["mAP@0.5"] == pytest.approx(ours["mAP@0.5"], abs=1e-12)
    assert theirs["AP@0.5"] == ours["AP@0.5"] and theirs["num_gt"] == ours["num_gt"]
    data = load_labels(coco)
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    assert data["relationships"] == [] and "segmentation" not in data["annotations"][0]


def test_cli_eval_reads_a_plain_coco_file(sim2sg_dataset, tmp_path):
    labels = json.loads((sim2sg_dataset / "labels.json").read_text())
    coco = tmp_path / "coco" / "labels.json"
    coco.parent.mkdir()
    coco.write_text(json.dumps(plain_coco(labels)))
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(noisy_predictions(labels)))
    for data in (coco, coco.parent):
        r = CliRunner().invoke(app, ["eval", "--data", str(data), "--predictions", str(p)])
        assert r.exit_code == 0, r.output
        assert "mAP@0.5" in json.loads((tmp_path / "eval_metrics.json").read_text())["detection"]


def test_coco_relationships_by_predicate_name(sim2sg_dataset, tmp_path):
    labels = json.loads((sim2sg_dataset / "labels.json").read_text())
    names = {p["id"]: p["name"] for p in labels["predicate_categories"]}
    coco = plain_coco(labels)
    coco["relationships"] = [{"subject_id": 1000 + r["subject_id"], "object_id": 1000 + r["object_id"],
                              "predicate": names[r["predicate_id"]]} for r in labels["relationships"]]
    (tmp_path / "vgrel.json").write_text(json.dumps(coco))
    gt, ref = load_ground_truth(tmp_path / "vgrel.json"), load_ground_truth(sim2sg_dataset)
    assert len(labels["relationships"]) > 0
    triplets = lambda g: sorted((g.predicates[p], g.categories[im.labels[s]], g.categories[im.labels[o]])
                                for im in g.images for s, o, p in im.relations)
    assert triplets(gt) == triplets(ref)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["annotations"][0].update(category_id=3), "annotations[0].category_id"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, 500, 5]), "annotations[0].bbox"),
    (lambda d: d["categories"][1].update(id=d["categories"][0]["id"]), "categories[1].id"),
    (lambda d: d.update(relationships=[{"subject_id": 1000, "object_id": 1001, "predicate_id": 4}]),
     "relationships[0].predicate_id"),
])
def test_bad_coco_names_file_and_field(sim2sg_dataset, tmp_path, mutate, field):
    coco = plain_coco(json.loads((sim2sg_dataset / "labels.json").read_text()))
    mutate(coco)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(InputError) as e:
        load_labels(path)
    assert e.value.field == field and e.value.source == str(path)


def test_yolo_and_vg_writers(tmp_path):
    samples = [three_object_sample(f"{i:06d}") for i in range(2)]
    out = tmp_path / "d"
    write_samples(out, samples, writers=("coco", "yolo", "vg"))
    labels = load_labels(out / "labels.json")
    s = samples[0]
    h, w = s.instance.shape
    rows = [line.split() for line in (out / "yolo/labels/000000.txt").read_text().splitlines()]
    assert len(rows) == len(s.objects)
    for row, o in zip(rows, s.objects):
        c, cx, cy, bw, bh = int(row[0]), *map(float, row[1:])
        x1, y1, x2, y2 = o.box
        assert s.categories[c] == o.category
        assert (cx * w, cy * h, bw * w, bh * h) == pytest.approx(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1),
                                                                 abs=1e-4)
    assert (out / "yolo/images/000000.png").read_bytes() == (out / "images/000000.png").read_bytes()
    yaml_text = (out / "yolo/data.yaml").read_text()
    assert "train: images" in yaml_text and "path:" not in yaml_text
    assert [line.split(": ")[1] for line in yaml_text.splitlines() if line.startswith("  ")] == \
        [json.dumps(c) for c in s.categories]
    # The Visual-Genome-style file reads back as the same ground truth.
    vg_entries = json.loads((out / "vg/scene_graphs.json").read_text())
    assert [e["image_id"] for e in vg_entries] == [0, 1]
    assert len(vg_entries[0]["relationships"]) == sum(r["image_id"] == 0 for r in labels["relationships"]) > 0
    a, b = load_ground_truth(out / "vg/scene_graphs.json"), load_ground_truth(out)
    for x, y in zip(a.images, b.images):
        assert np.array_equal(x.boxes, y.boxes)
        assert [a.categories[k] for k in x.labels] == [b.categories[k] for k in y.labels]
        assert sorted((a.predicates[p], s_, o) for s_, o, p in x.relations) == \
            sorted((b.predicates[p], s_, o) for s_, o, p in y.relations)


def test_vg_entry_without_size_is_named(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text(json.dumps([{"image_id": 1, "objects": [], "relationships": []}]))
    with pytest.raises(InputError) as e:
        load_labels(path)
    assert e.value.field == "[0]" and "width" in str(e.value)
