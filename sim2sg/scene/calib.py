"""A user's camera for their target images: calibration files -> `Camera`s (docs/formats.md,
"Target camera").

`target_cameras(spec, images, nominal)` gives one `Camera` per image, at that image's own size.
`spec` is one calibration file for the whole folder, or a folder holding one file per image
(``<image stem>.json`` or ``<image stem>.txt``). A file is one of:

- **sim2sg camera JSON**: intrinsics as ``"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``, or
  ``"fx", "fy", "cx", "cy"``, or ``"hfov_deg"`` (square pixels, principal point at the centre), or
  ``"intrinsics": "FILE"`` (a KITTI calib or COLMAP cameras.txt, relative to the JSON; with
  ``"camera_id"`` to pick one of several COLMAP cameras); optional ``"width", "height"`` (pixels:
  checked against the images); the pose as ``"position": [x, y, z], "look_at": [x, y, z]`` (world
  meters, +Z up), or as ``"mount": {"height": m, "pitch_deg": deg, "roll_deg": deg}`` over the
  ground plane (pitch > 0 looks down; roll turns the image clockwise about the optical axis);
  optional ``"near", "far"`` (m).
- **KITTI calib** (``P2: 12 numbers``, as in the object devkit): K = P2[:, :3]; no image size.
- **COLMAP / OpenCV cameras.txt** (``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...``): the pinhole part
  of SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV; lens distortion is
  ignored (undistort the images first when it is large); fisheye models are refused.

What a file does not give comes from `nominal` (the environment's nominal camera): the pose of an
intrinsics-only file (KITTI, cameras.txt) is the nominal camera's; a ``mount`` keeps the nominal
camera's ground position (x, y) and heading and replaces its height, pitch and roll. So the
generated scenes stay in the environment's world (its area, its road) seen from the user's camera.

An image that disagrees with its calibration (another size than the file states, or a principal
point outside the image) is one `InputError(calibration file, field, message)` naming the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sim2sg.checks import FOV_DEG, Checker, focal_problem, focal_px, imread, parse_json
from sim2sg.errors import InputError
from sim2sg.scene.camera import WORLD_UP, Camera

# COLMAP camera models: number of parameters, and whether the pinhole part is (f, cx, cy).
_JSON_FIELDS = ("K", "fx", "fy", "cx", "cy", "hfov_deg", "intrinsics", "camera_id", "width", "height", "position",
                "look_at", "mount", "near", "far")
_COLMAP_MODELS = {"SIMPLE_PINHOLE": (3, True), "PINHOLE": (4, False), "SIMPLE_RADIAL": (4, True),
                  "RADIAL": (5, True), "OPENCV": (8, False), "FULL_OPENCV": (12, False)}


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) pixels of an image file; `InputError` when it cannot be read."""
    img = imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(path, "", "missing or not a readable image")
    return int(img.shape[1]), int(img.shape[0])


def target_cameras(spec: str | Path, images: Sequence[str | Path], nominal: Camera) -> list[Camera]:
    """One `Camera` per image of `images`, at the image's size (see the module docstring)."""
    spec = Path(spec)
    if not spec.exists():
        raise InputError(spec, "", "camera file or folder not found")
    cache: dict[Path, tuple] = {}
    out = []
    for img in images:
        img = Path(img)
        if spec.is_dir():
            found = [spec / f"{img.stem}{ext}" for ext in (".json", ".txt") if (spec / f"{img.stem}{ext}").is_file()]
            if not found:
                raise InputError(spec, img.stem, f"no calibration {img.stem}.json or {img.stem}.txt for image {img}")
            path = found[0]
        else:
            path = spec
        if path not in cache:
            cache[path] = read_calibration(path, nominal)
        out.append(_for_image(cache[path], path, img, image_size(img)))
    return out


def camera_at(spec: str | Path, size: tuple[int, int], nominal: Camera) -> Camera:
    """The camera of calibration file `spec` for an image of `size` (width, height)."""
    return _for_image(read_calibration(Path(spec), nominal), Path(spec), Path("<image>"), size)


def _for_image(calib: tuple, path: Path, image: Path, size: tuple[int, int]) -> Camera:
    """The calibration (fx, fy, cx, cy, (w, h) or None, field, pose dict) as a Camera at `size`."""
    fx, fy, cx, cy, stated, field, pose = calib
    w, h = size
    if stated is not None and tuple(stated) != (w, h):
        raise InputError(path, field or "width", f"the calibration is for {stated[0]}x{stated[1]} images, "
                         f"but {image} is {w}x{h}")
    if not (0 < cx < w and 0 < cy < h):
        raise InputError(path, field or "cx", f"principal point ({cx:g}, {cy:g}) lies outside {image} "
                         f"({w}x{h}): this calibration does not belong to this image")
    problem = focal_problem(fx, fy, w, h)
    if problem:  # named by where the focal lengths came from: K, a KITTI P2, a COLMAP camera, or fx
        raise InputError(path, "fx" if field in (None, "cx", "width") else field, f"{problem}: not a camera for {image}")
    return Camera(w, h, fx, fy, cx, cy, **pose)


def read_calibration(path: Path, nominal: Camera) -> tuple:
    """(fx, fy, cx, cy, (width, height) or None, field of the size/intrinsics, pose kwargs of
    `Camera`) of one calibration file (sim2sg JSON, KITTI calib, COLMAP cameras.txt)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, "", f"cannot read: {e}") from None
    if path.suffix.lower() == ".json":
        return _read_json(path, text, nominal)
    fx, fy, cx, cy, size, field = _read_intrinsics(path, text, None)
    return fx, fy, cx, cy, size, field, _nominal_pose(nominal)


def _read_intrinsics(path: Path, text: str, camera_id: int | None) -> tuple:
    """KITTI calib (a ``P2:`` line) or COLMAP cameras.txt -> (fx, fy, cx, cy, size or None, field)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if any(ln.startswith("P2:") for ln in lines):
        line = next(ln for ln in lines if ln.startswith("P2:"))
        try:
            p = [float(v) for v in line[3:].split()]
        except ValueError:
            raise InputError(path, "P2", "expected 12 numbers") from None
        if len(p) != 12 or not all(math.isfinite(v) for v in p) or p[0] <= 0 or p[5] <= 0:
            raise InputError(path, "P2", "expected 12 finite numbers with fx = P2[0] > 0 and fy = P2[5] > 0")
        return p[0], p[5], p[2], p[6], None, "P2"
    if not lines:
        raise InputError(path, "", "empty: expected a KITTI calib (P2: ...) or a COLMAP cameras.txt")
    cams = {}
    for n, ln in enumerate(lines):
        parts = ln.split()
        field = f"camera {parts[0]}"
        if len(parts) < 5:
            raise InputError(path, field, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS... "
                             "(COLMAP cameras.txt) or a KITTI calib with a P2 line")
        model = parts[1]
        if model not in _COLMAP_MODELS:
            raise InputError(path, f"{field}.model", f"unsupported camera model {model!r} (pinhole models only: "
                             f"{', '.join(_COLMAP_MODELS)})")
        try:
            cid, w, h = int(parts[0]), int(parts[2]), int(parts[3])
            params = [float(v) for v in parts[4:]]
        except ValueError:
            raise InputError(path, field, "CAMERA_ID, WIDTH, HEIGHT must be integers and PARAMS numbers") from None
        count, single_f = _COLMAP_MODELS[model]
        if len(params) != count or w <= 0 or h <= 0 or params[0] <= 0 or not all(map(math.isfinite, params)):
            raise InputError(path, field, f"{model} needs {count} finite parameters, a focal length > 0 "
                             "and a positive size")
        fx, fy, cx, cy = (params[0], params[0], params[1], params[2]) if single_f else params[:4]
        if fy <= 0:
            raise InputError(path, field, "fy must be > 0")
        cams[cid] = (fx, fy, cx, cy, (w, h), field)
    if camera_id is not None:
        if camera_id not in cams:
            raise InputError(path, "", f"no camera {camera_id} (cameras: {sorted(cams)})")
        return cams[camera_id]
    if len(cams) > 1:
        raise InputError(path, "", f"{len(cams)} cameras: give one file per image, or a camera JSON with "
                         "\"intrinsics\" and \"camera_id\"")
    return next(iter(cams.values()))


def _read_json(path: Path, text: str, nominal: Camera) -> tuple:
    d = parse_json(text, path)
    v = Checker(path)
    v.type(d, dict, "", "a JSON object")
    for key in d:  # a typo ("nera") must not fall back to the nominal value silently
        if key not in _JSON_FIELDS:
            v.fail(key, f"unknown field (known: {', '.join(_JSON_FIELDS)})")
    size = None
    if "width" in d or "height" in d:
        size = (v.integer(v.required(d, "width", ""), "width", minimum=1),
                v.integer(v.required(d, "height", ""), "height", minimum=1))
    field = "width"
    if "intrinsics" in d:
        ref = path.parent / v.string(d["intrinsics"], "intrinsics")
        if not ref.is_file():
            raise InputError(path, "intrinsics", f"{ref} not found")
        cid = v.integer(d["camera_id"], "camera_id") if "camera_id" in d else None
        try:
            text = ref.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(path, "intrinsics", f"cannot read {ref}: {e}") from None
        fx, fy, cx, cy, ref_size, _ = _read_intrinsics(ref, text, cid)
        if size is not None and ref_size is not None and size != ref_size:
            v.fail("width", f"{size[0]}x{size[1]} differs from {ref}'s {ref_size[0]}x{ref_size[1]}")
        size = size or ref_size
    elif "K" in d:
        k = v.list(d["K"], "K")
        if len(k) != 3:
            v.fail("K", "expected a 3x3 matrix")
        rows = [v.numbers(r, 3, f"K[{i}]") for i, r in enumerate(k)]
        if rows[0][1] != 0 or rows[1][0] != 0 or rows[2] != [0, 0, 1]:
            v.fail("K", "expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
        fx, cx, fy, cy = rows[0][0], rows[0][2], rows[1][1], rows[1][2]
        field = "K"
    elif "hfov_deg" in d:
        if size is None:
            v.fail("hfov_deg", "needs width and height (the principal point is the image centre)")
        hfov = v.number(d["hfov_deg"], "hfov_deg")
        if not FOV_DEG[0] <= hfov <= FOV_DEG[1]:
            v.fail("hfov_deg", f"must be in [{FOV_DEG[0]}, {FOV_DEG[1]}] degrees, got {hfov}")
        fx = fy = focal_px(hfov, size[0])
        cx, cy = size[0] / 2, size[1] / 2
    elif all(k in d for k in ("fx", "fy", "cx", "cy")):
        fx, fy, cx, cy = (v.number(d[k], k) for k in ("fx", "fy", "cx", "cy"))
        field = "cx"
    else:
        v.fail("", "no intrinsics: give \"K\", \"fx\"/\"fy\"/\"cx\"/\"cy\", \"hfov_deg\" or \"intrinsics\"")
    if not (fx > 0 and fy > 0):
        v.fail(field if field != "width" else "", f"focal lengths must be > 0, got fx={fx}, fy={fy}")
    return fx, fy, cx, cy, size, field if size is None else "width", _pose(d, v, nominal)


def _nominal_pose(nominal: Camera) -> dict:
    return {"position": tuple(nominal.position), "look_at": tuple(nominal.look_at), "near": nominal.near,
            "far": nominal.far, "orientation": nominal.orientation}


def _pose(d: dict, v: Checker, nominal: Camera) -> dict:
    pose = _nominal_pose(nominal)
    for key in ("near", "far"):
        if key in d:
            pose[key] = v.number(d[key], key)
    if "position" in d or "look_at" in d:
        pos = np.array(v.numbers(v.required(d, "position", ""), 3, "position"))
        at = np.array(v.numbers(v.required(d, "look_at", ""), 3, "look_at"))
        with np.errstate(over="ignore"):
            if not 1e-9 <= np.linalg.norm(at - pos) < math.inf:
                v.fail("look_at", "must differ from position (and lie a finite distance from it)")
        pose.update(position=tuple(pos.tolist()), look_at=tuple(at.tolist()), orientation=None)
    elif "mount" in d:
        m = v.required(d, "mount", "")
        v.type(m, dict, "mount", "a JSON object {height, pitch_deg, roll_deg}")
        height = v.number(v.required(m, "height", "mount"), "mount.height")
        pitch = v.number(m.get("pitch_deg", 0.0), "mount.pitch_deg")
        roll = v.number(m.get("roll_deg", 0.0), "mount.roll_deg")
        if height <= 0:
            v.fail("mount.height", f"must be > 0 (meters over the ground), got {height}")
        if not -89.0 <= pitch <= 89.0:
            v.fail("mount.pitch_deg", f"must be in [-89, 89], got {pitch}")
        for key in set(m) - {"height", "pitch_deg", "roll_deg"}:
            v.fail(f"mount.{key}", "unknown field (known: height, pitch_deg, roll_deg)")
        pose.update(mount_pose(nominal, height, pitch, roll))
    if not 0 < pose["near"] < pose["far"]:
        v.fail("near", f"need 0 < near < far, got near={pose['near']}, far={pose['far']}")
    return pose


def mount_pose(nominal: Camera, height: float, pitch_deg: float, roll_deg: float = 0.0) -> dict:
    """Camera pose kwargs at `nominal`'s ground position and heading, `height` m over the ground,
    looking `pitch_deg` below the horizon, rolled `roll_deg` clockwise about the optical axis."""
    fwd0 = np.asarray(nominal.look_at, float) - np.asarray(nominal.position, float)
    heading = fwd0[:2] / max(np.linalg.norm(fwd0[:2]), 1e-9) if np.linalg.norm(fwd0[:2]) > 1e-9 else np.array([0.0, 1.0])
    p = math.radians(pitch_deg)
    fwd = np.array([heading[0] * math.cos(p), heading[1] * math.cos(p), -math.sin(p)])
    pos = np.array([nominal.position[0], nominal.position[1], height])
    orientation = None
    if abs(roll_deg) > 1e-9:
        right = np.cross(fwd, WORLD_UP)
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        r = math.radians(roll_deg)  # image turns clockwise: the camera's x axis turns towards its y axis
        right, down = math.cos(r) * right + math.sin(r) * down, -math.sin(r) * right + math.cos(r) * down
        orientation = tuple(np.stack([right, down, fwd]).reshape(-1).tolist())
    return {"position": tuple(pos.tolist()), "look_at": tuple((pos + fwd).tolist()), "orientation": orientation}
