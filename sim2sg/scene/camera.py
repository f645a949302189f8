"""A pinhole camera in the world frame, shared by the sampler, relations, USD, renderer and lift.

World frame: right-handed, +Z up, meters; the ground is the plane z = 0.
Camera frame (for projection): OpenCV convention, x right, y down, z forward (optical axis).
Pixel frame: origin at the top-left corner of the top-left pixel, u right, v down; pixel (i, j)
covers [j, j+1) x [i, i+1), so its centre is (j + 0.5, i + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Camera:
    """Intrinsics in pixels, pose as a position and a look-at point in world meters.

    width, height: image size in pixels. fx, fy: focal lengths in pixels. cx, cy: principal point
    in pixels. position, look_at: (3,) world points. near, far: clipping distances in meters.
    orientation: None (every sampled camera) = upright, the image x axis horizontal in the world
    (no roll) and the rotation derived from position and look_at; else 9 floats, the (3, 3)
    world-to-camera rotation row-major (rows: camera x, y, z axes in world coordinates), for a
    camera read from a stage that the upright model cannot express (roll, or looking straight down
    with another image x axis); then look_at = position + the optical axis.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    near: float = 0.1
    far: float = 1000.0
    orientation: tuple[float, ...] | None = None

    # ---- frames -------------------------------------------------------------------------------
    def rotation(self) -> np.ndarray:
        """(3, 3) world-to-camera rotation R (rows: camera x, y, z axes in world coordinates)."""
        if self.orientation is not None:
            return np.asarray(self.orientation, dtype=np.float64).reshape(3, 3)
        eye = np.asarray(self.position, dtype=np.float64)
        fwd = np.asarray(self.look_at, dtype=np.float64) - eye
        fwd = fwd / np.linalg.norm(fwd)
        right = np.cross(fwd, WORLD_UP)
        n = np.linalg.norm(right)
        if n < 1e-9:  # looking straight down or up: pick world +X as image right
            right = np.array([1.0, 0.0, 0.0])
        else:
            right = right / n
        down = np.cross(fwd, right)
        return np.stack([right, down, fwd])

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera-frame points (OpenCV axes, meters)."""
        r = self.rotation()
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.position)) @ r.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> ((N, 2) pixel coordinates (u, v), (N,) depth along the axis, m)."""
        pc = self.world_to_camera(points)
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * pc[:, 0] / z + self.cx
            v = self.fy * pc[:, 1] / z + self.cy
        return np.stack([u, v], axis=1), z

    def intrinsics(self) -> np.ndarray:
        """(3, 3) K matrix in pixels."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def pixel_rays(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates -> (N, 3) unit ray directions in the world frame."""
        uv = np.asarray(uv, dtype=np.float64)
        d_cam = np.stack(
            [(uv[:, 0] - self.cx) / self.fx, (uv[:, 1] - self.cy) / self.fy, np.ones(len(uv))], axis=1
        )
        d = d_cam @ self.rotation()
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def plane_point(self, uv, z: float = 0.0) -> np.ndarray | None:
        """(3,) world point (m) where the ray through pixel `uv` (u, v) meets the horizontal plane
        at height z, or None when the pixel looks at or above that plane's horizon."""
        p = self.plane_points(np.array([uv], dtype=np.float64), z)[0]
        return None if np.isnan(p[0]) else p

    def plane_points(self, uv: np.ndarray, z: float = 0.0) -> np.ndarray:
        """(N, 3) world points (m) where the rays through pixels uv (N, 2) meet the horizontal
        plane at height z; rows of NaN where a pixel looks at or above that plane's horizon."""
        d = self.pixel_rays(np.asarray(uv, dtype=np.float64).reshape(-1, 2))
        o = np.asarray(self.position, dtype=np.float64)
        hits = (d[:, 2] < -1e-6) & (o[2] > z)
        s = np.full(len(d), np.nan)
        s[hits] = (z - o[2]) / d[hits, 2]
        return o + d * s[:, None]

    def ground_directions(self) -> dict[str, np.ndarray]:
        """Unit ground-plane (z = 0) directions of CLEVR's four spatial predicates.

        As in CLEVR's generator: `behind` is the camera's viewing direction and `left` the camera's
        -x axis, both projected onto the ground plane; `front` and `right` are their negatives.
        Returns {"left", "right", "front", "behind"} -> (3,) arrays with z = 0.
        """
        r = self.rotation()
        behind = r[2] * np.array([1.0, 1.0, 0.0])
        if np.linalg.norm(behind) < 1e-9:  # looking straight down: "behind" is up the image
            behind = -r[1] * np.array([1.0, 1.0, 0.0])
        left = -r[0] * np.array([1.0, 1.0, 0.0])
        behind /= np.linalg.norm(behind)
        left /= np.linalg.norm(left)
        return {"behind": behind, "front": -behind, "left": left, "right": -left}

    # ---- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-able dict; "orientation" only for a camera that has one."""
        d = {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "position": list(self.position),
            "look_at": list(self.look_at),
            "near": self.near,
            "far": self.far,
        }
        if self.orientation is not None:
            d["orientation"] = list(self.orientation)
        return d

    @staticmethod
    def from_dict(d: dict) -> "Camera":
        return Camera(
            width=int(d["width"]),
            height=int(d["height"]),
            fx=float(d["fx"]),
            fy=float(d["fy"]),
            cx=float(d["cx"]),
            cy=float(d["cy"]),
            position=tuple(float(x) for x in d["position"]),
            look_at=tuple(float(x) for x in d["look_at"]),
            near=float(d.get("near", 0.1)),
            far=float(d.get("far", 1000.0)),
            orientation=tuple(float(x) for x in d["orientation"]) if d.get("orientation") is not None else None,
        )

    def resized(self, width: int, height: int) -> "Camera":
        """The same view at another resolution (intrinsics scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        return Camera(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                      self.position, self.look_at, self.near, self.far, self.orientation)
