"""A small hand-built `Sample` for tests and examples of the dataset side, without the renderer.

Objects are axis-aligned pixel rectangles painted in order (later ones occlude earlier ones), so
masks, boxes, visible pixels and occlusion are known exactly. No randomness: the colours and depths
are functions of the object index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim2sg.render.sample import ObjectLabel, Sample
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera

CLEVR_CATEGORIES = ("cube", "sphere", "cylinder")
CLEVR_PREDICATES = ("front", "behind", "left", "right")


@dataclass(frozen=True)
class ToyObject:
    """object_id: graph node id. rect: (j0, i0, j1, i1) pixel columns/rows painted, exclusive end.
    position: bottom-face centre (world m); yaw degrees; size (sx, sy, sz) m; attributes: extra."""

    object_id: int
    category: str
    rect: tuple[int, int, int, int]
    position: tuple[float, float, float]
    yaw: float = 0.0
    size: tuple[float, float, float] = (0.7, 0.7, 0.7)
    attributes: dict | None = None
    color: tuple[float, float, float] | None = None
    material: str | None = "rubber"


def toy_camera(width: int = 64, height: int = 48) -> Camera:
    """A CLEVR-like camera: 10 m behind the origin along -y, 6 m up, looking at the origin."""
    f = 1.2 * width
    return Camera(width, height, f, f, width / 2, height / 2, (0.0, -10.0, 6.0), (0.0, 0.0, 0.0))


def toy_sample(
    objects: Sequence[ToyObject],
    relations: Sequence[tuple[int, str, int]] = (),
    name: str = "000000",
    width: int = 64,
    height: int = 48,
    categories: Sequence[str] = CLEVR_CATEGORIES,
    predicates: Sequence[str] = CLEVR_PREDICATES,
    env: str = "clevr",
    min_visible_pixels: int = 1,
) -> Sample:
    """A `Sample` with `objects` painted in order; objects left with fewer than
    `min_visible_pixels` pixels are dropped from `objects` and `relations` (they stay in `graph`)."""
    cam = toy_camera(width, height)
    g = sg.new_graph(env, cam)
    for o in objects:
        sg.add_object(g, o.object_id, o.category, o.position, o.yaw, o.size, color=o.color,
                      material=o.material, attributes=o.attributes)
    for s, p, t in relations:
        sg.add_relation(g, s, p, t)

    image = np.full((height, width, 3), 40, np.uint8)
    depth = np.full((height, width), np.inf, np.float32)
    instance = np.zeros((height, width), np.int32)
    semantic = np.zeros((height, width), np.uint8)
    alone = {}
    for k, o in enumerate(objects):
        j0, i0, j1, i1 = o.rect
        inst = k + 1
        cat_id = list(categories).index(o.category) + 1
        image[i0:i1, j0:j1] = (50 + 40 * k, 200 - 30 * k, 90)
        depth[i0:i1, j0:j1] = 5.0 + k  # painted later = in front is not modelled; labels only
        instance[i0:i1, j0:j1] = inst
        semantic[i0:i1, j0:j1] = cat_id
        alone[inst] = max(0, min(j1, width) - max(j0, 0)) * max(0, min(i1, height) - max(i0, 0))

    labels = []
    for k, o in enumerate(objects):
        inst = k + 1
        mask = instance == inst
        n = int(mask.sum())
        if n < min_visible_pixels:
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        j0, i0, j1, i1 = o.rect
        full = (j1 - j0) * (i1 - i0)
        labels.append(ObjectLabel(
            instance_id=inst, object_id=o.object_id, category=o.category,
            category_id=list(categories).index(o.category) + 1,
            box=(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)),
            visible_pixels=n, occlusion=1.0 - n / alone[inst], truncation=1.0 - alone[inst] / full,
            position=o.position, yaw=o.yaw, size=o.size,
        ))
    visible = {lab.object_id for lab in labels}
    rels = tuple(sorted((s, p, t) for s, p, t in relations if s in visible and t in visible))
    return Sample(image, depth, instance, semantic, tuple(labels), rels, cam, g,
                  tuple(categories), tuple(predicates), name)


def three_object_sample(name: str = "000000") -> Sample:
    """Three CLEVR objects, the middle one partly hidden by the right one, plus a fourth hidden
    completely (dropped, with its relation)."""
    objs = [
        ToyObject(0, "cube", (4, 20, 16, 36), (-3.0, 0.0, 0.0), 30.0, (1.0, 1.0, 1.0),
                  {"color": "red", "size": "large"}),
        ToyObject(1, "sphere", (24, 10, 40, 26), (0.0, 2.0, 0.0), 0.0, (0.7, 0.7, 0.7),
                  color=(0.16, 0.29, 0.84), material="metal"),
        ToyObject(2, "cylinder", (34, 18, 60, 40), (2.0, -1.0, 0.0), 200.0, (1.4, 1.4, 1.4)),
        ToyObject(3, "cube", (36, 24, 40, 28), (2.0, 1.0, 0.0)),  # inside object 2's rectangle
    ]
    rels = [(1, "behind", 0), (0, "front", 1), (2, "right", 1), (3, "behind", 2), (0, "left", 2)]
    # Object 3 is painted before 2 so that 2 hides it.
    return toy_sample([objs[0], objs[1], objs[3], objs[2]], rels, name=name)
