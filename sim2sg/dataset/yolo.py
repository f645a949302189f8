"""YOLO detection labels (Ultralytics / Darknet layout) from a `Sample` and labels.json.

Per image ``yolo/labels/NNNNNN.txt``: one line per visible object, ``class cx cy w h`` with the
class the 0-based category index (labels.json ``category_id - 1``) and the box centre and size
normalised by the image width and height (6 decimals). The image is copied to
``yolo/images/NNNNNN.png`` (Ultralytics finds labels by replacing ``/images/`` with ``/labels/``).
``yolo/data.yaml`` (written once per dataset, by `sim2sg.dataset.coco.assemble`) names the classes;
it has no ``path`` key, so Ultralytics takes the folder holding it as the dataset root.
"""

from __future__ import annotations

import json

from sim2sg.render.sample import Sample

DATA_YAML = "yolo/data.yaml"


def label_lines(sample: Sample) -> str:
    """The ``yolo/labels`` text of `sample` (empty when nothing is visible)."""
    h, w = sample.instance.shape
    lines = []
    for o in sample.objects:
        x1, y1, x2, y2 = (float(v) for v in o.box)
        lines.append(f"{o.category_id - 1} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                     f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "".join(line + "\n" for line in lines)


def data_yaml(categories: list[str]) -> str:
    """``data.yaml`` text: train and val are the dataset's images, names by class index (JSON
    strings are valid YAML scalars, so any class name is quoted safely)."""
    names = "".join(f"  {i}: {json.dumps(c)}\n" for i, c in enumerate(categories))
    return f"# written by sim2sg render --writers yolo\ntrain: images\nval: images\nnc: {len(categories)}\nnames:\n{names}"
