"""KITTI object devkit files from a `Sample`: `label_2/NNNNNN.txt` lines and `calib/NNNNNN.txt`.

KITTI's camera frame is sim2sg's camera frame (OpenCV: x right, y down, z forward, meters), so the
labels are written in the frame of the stage's camera and `P2 = K [I | 0]`, `R0_rect = I`. The
"velodyne" frame of the calib file is sim2sg's world frame (+Z up), so `Tr_velo_to_cam` maps world
points into the camera. There is one camera: P0..P3 are all `K [I | 0]` (no stereo baseline).

A KITTI box has a single yaw about the camera Y axis, which is the world's vertical only when the
camera has no pitch (driving cameras are near level). For a pitched camera the location is still
exact (the bottom-face centre in camera coordinates) and `rotation_y` is the heading projected onto
the camera's x-z plane.
"""

from __future__ import annotations

import math

import numpy as np

from sim2sg.render.sample import ObjectLabel, Sample
from sim2sg.scene.camera import Camera

# KITTI's `occluded` is a human-annotated state; we derive it from the exact occlusion fraction.
# Upper bounds (exclusive) of states 0 (fully visible), 1 (partly occluded); above: 2 (largely).
# State 3 ("unknown") is never written: our occlusion is always known.
OCCLUSION_STATE_BOUNDS = (0.1, 0.5)

_KITTI_TYPES = {"car": "Car", "pedestrian": "Pedestrian"}


def kitti_type(category: str) -> str:
    """KITTI `type` of a sim2sg category: car -> Car, pedestrian -> Pedestrian, otherwise the name
    with its first letter capitalised and spaces as underscores (person_sitting -> Person_sitting,
    truck -> Truck, cube -> Cube), since a type is one whitespace-free token."""
    if category in _KITTI_TYPES:
        return _KITTI_TYPES[category]
    name = category.strip().replace(" ", "_")
    return name[:1].upper() + name[1:]


def occlusion_state(occlusion: float) -> int:
    """KITTI integer occlusion state 0 (fully visible), 1 (partly), 2 (largely occluded) from the
    occluded fraction in [0, 1] (see `OCCLUSION_STATE_BOUNDS`)."""
    lo, hi = OCCLUSION_STATE_BOUNDS
    if occlusion < lo:
        return 0
    return 1 if occlusion < hi else 2


def _wrap_pi(a: float) -> float:
    """Angle in radians wrapped to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def box3d_camera(obj: ObjectLabel, camera: Camera) -> tuple[tuple[float, float, float], tuple[float, float, float], float, float]:
    """KITTI 3D fields of one object.

    Returns ((h, w, l) meters, (x, y, z) camera-frame meters of the bottom-face centre,
    rotation_y radians in [-pi, pi), alpha radians in [-pi, pi)).
    h = extent along world Z; l (length) = the longer horizontal extent, w = the shorter. The
    heading is the object's local axis of its length: local +x (the direction of yaw) when
    sx >= sy, else local +y (sim2sg's driving cars are long along local y). rotation_y = 0 when the
    heading is the camera's +x; a heading along the camera's +z (driving away) gives -pi/2, as in
    KITTI (heading = (cos ry, 0, -sin ry)). alpha = rotation_y - atan2(x, z), the observation angle.
    """
    sx, sy, sz = obj.size
    loc = camera.world_to_camera(np.asarray([obj.position], dtype=np.float64))[0]
    yaw = math.radians(obj.yaw + (0.0 if sx >= sy else 90.0))
    heading = camera.rotation() @ np.array([math.cos(yaw), math.sin(yaw), 0.0])
    ry = _wrap_pi(math.atan2(-heading[2], heading[0]))
    alpha = _wrap_pi(ry - math.atan2(loc[0], loc[2]))
    return (sz, min(sx, sy), max(sx, sy)), (float(loc[0]), float(loc[1]), float(loc[2])), ry, alpha


def label_lines(sample: Sample) -> str:
    """The `label_2` text of `sample`: one line of KITTI's 15 fields per visible object
    (type truncated occluded alpha left top right bottom h w l x y z rotation_y), in instance order.

    The 2D box is sim2sg's exact box (continuous pixel edges, exclusive right/bottom), which is how
    KITTI's evaluation treats its boxes (area = (right - left) * (bottom - top)).
    """
    lines = []
    for obj in sample.objects:
        (h, w, l), (x, y, z), ry, alpha = box3d_camera(obj, sample.camera)
        x1, y1, x2, y2 = obj.box
        lines.append(
            f"{kitti_type(obj.category)} {obj.truncation:.2f} {occlusion_state(obj.occlusion)} "
            f"{alpha:.2f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {h:.2f} {w:.2f} {l:.2f} "
            f"{x:.2f} {y:.2f} {z:.2f} {ry:.2f}"
        )
    return "".join(line + "\n" for line in lines)


def calib_text(camera: Camera) -> str:
    """The devkit's `calib/NNNNNN.txt` for `camera`: P0..P3 (3x4), R0_rect (3x3), Tr_velo_to_cam and
    Tr_imu_to_velo (3x4), row-major, space separated (see the module docstring for the frames)."""
    p = np.zeros((3, 4))
    p[:, :3] = camera.intrinsics()
    r = camera.rotation()
    tr_velo = np.concatenate([r, -(r @ np.asarray(camera.position, dtype=np.float64))[:, None]], axis=1)
    tr_imu = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)

    def row(name: str, m: np.ndarray) -> str:
        return name + ": " + " ".join(f"{v:.12e}" for v in np.asarray(m, dtype=np.float64).ravel()) + "\n"

    return (row("P0", p) + row("P1", p) + row("P2", p) + row("P3", p) + row("R0_rect", np.eye(3))
            + row("Tr_velo_to_cam", tr_velo) + row("Tr_imu_to_velo", tr_imu))
