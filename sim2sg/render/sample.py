"""The labelled sample the renderer hands downstream (dataset writers, the training loop).

One `Sample` per image, numpy arrays on the host. The renderer produces them from batched tensors;
writers and the trainer only read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from sim2sg.scene.camera import Camera


@dataclass(frozen=True)
class ObjectLabel:
    """Exact label of one visible object instance.

    instance_id: value of its pixels in `Sample.instance` (>= 1).
    object_id: its scene-graph node id (for stages without a sim2sg graph: instance_id - 1).
    category: class name; category_id: 1-based index in `Sample.categories`.
    box: (x1, y1, x2, y2) pixels, tight around the visible pixels, exclusive right/bottom edge
         (a single pixel at column j, row i gives (j, i, j + 1, i + 1)).
    visible_pixels: number of pixels in the instance mask.
    occlusion: 1 - visible_pixels / pixels the object would cover alone in the image, in [0, 1].
    truncation: fraction of the object's projected silhouette that falls outside the image, [0, 1].
    position, yaw, size: the graph's 3D placement (world meters, degrees, meters).
    """

    instance_id: int
    object_id: int
    category: str
    category_id: int
    box: tuple[float, float, float, float]
    visible_pixels: int
    occlusion: float
    truncation: float
    position: tuple[float, float, float]
    yaw: float
    size: tuple[float, float, float]


@dataclass(frozen=True)
class Sample:
    """One rendered, labelled image.

    image: (H, W, 3) uint8 sRGB.
    depth: (H, W) float32 meters along the optical axis (camera z); +inf where no surface.
    instance: (H, W) int32, 0 = background, k = instance k (see ObjectLabel.instance_id).
    semantic: (H, W) uint8, 0 = background, c = category id (1-based index into `categories`).
    objects: visible objects (at least the environment's minimum visible pixels), by instance_id.
    relations: (subject object_id, predicate, object object_id) triplets among visible objects.
    camera: the camera at this image's resolution.
    graph: the full scene graph of the stage (all objects, visible or not), or None.
    categories, predicates: the vocabularies (environment order).
    name: the stem used for output files (e.g. "000123").
    skipped: (prim path, type name) of the stage's gprims the renderer could not draw (curves,
    points, volumes: `sim2sg.render.scene.SceneData.skipped`); empty when everything was drawn.
    """

    image: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    semantic: np.ndarray
    objects: tuple[ObjectLabel, ...]
    relations: tuple[tuple[int, str, int], ...]
    camera: Camera
    graph: nx.MultiDiGraph | None
    categories: tuple[str, ...]
    predicates: tuple[str, ...]
    name: str
    skipped: tuple[tuple[str, str], ...] = ()
