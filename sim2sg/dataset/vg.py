"""Scene graphs as one Visual-Genome-style JSON (``vg/scene_graphs.json``), from labels.json.

A list with one entry per image, in labels.json image order::

    {"image_id": int, "file_name": str, "width": int, "height": int,
     "objects": [{"object_id": int, "x": float, "y": float, "w": float, "h": float, "names": [class]}],
     "relationships": [{"relationship_id": int, "predicate": str, "subject_id": int, "object_id": int}]}

Boxes are pixels (x, y top-left; no +1), as Visual Genome's; ``object_id`` is the labels.json
annotation id (unique over the dataset), ``relationship_id`` the relationship id. Visual Genome's
own file keeps image sizes in image_data.json; here they sit in each entry. `sim2sg eval --data`
reads this file back (`sim2sg.dataset.foreign`).
"""

from __future__ import annotations

SCENE_GRAPHS_FILE = "vg/scene_graphs.json"


def scene_graphs(labels: dict) -> list[dict]:
    """The Visual-Genome-style list of a labels.json dict (see the module docstring)."""
    cats = {c["id"]: c["name"] for c in labels["categories"]}
    preds = {p["id"]: p["name"] for p in labels.get("predicate_categories", [])}
    entries = {im["id"]: {"image_id": im["id"], "file_name": im["file_name"], "width": im["width"],
                          "height": im["height"], "objects": [], "relationships": []}
               for im in labels["images"]}
    for a in labels["annotations"]:
        x, y, w, h = a["bbox"]
        entries[a["image_id"]]["objects"].append(
            {"object_id": a["id"], "x": x, "y": y, "w": w, "h": h, "names": [cats[a["category_id"]]]})
    for r in labels.get("relationships", []):
        entries[r["image_id"]]["relationships"].append(
            {"relationship_id": r["id"], "predicate": preds[r["predicate_id"]],
             "subject_id": r["subject_id"], "object_id": r["object_id"]})
    return list(entries.values())
