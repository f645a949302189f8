"""Typed checks of parsed JSON that raise one `InputError(source, field, message)` each.

Shared by the file readers (scene graphs, labels.json); fields are dotted/indexed paths such as
``objects[3].size[1]``.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
from pathlib import Path

from sim2sg.errors import InputError

# Deeper JSON than this is refused before validation walks it: no sim2sg file nests beyond ~6
# levels, and Python's parser and recursive checks would otherwise hit the recursion limit.
MAX_JSON_DEPTH = 64


def _json_int(text: str) -> int | float:
    # 308 digits stay below float's largest value; a longer literal reads as a float, +-inf past
    # that range, so each reader's finite-number check names its field (no OverflowError).
    return int(text) if len(text) <= 308 else float(text)


def parse_json(text: str | bytes, source: str | Path) -> object:
    """Parse JSON text; every failure (syntax, bad UTF-8, nesting deeper than `MAX_JSON_DEPTH`,
    numbers too long to convert) is one `InputError(source, "", ...)`. Integers past float's
    range read as +-inf (the readers' finite checks then reject them by field)."""
    try:
        data = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as e:
        raise InputError(source, "", f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise InputError(source, "", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise InputError(source, "", f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    except ValueError as e:  # e.g. an integer literal longer than Python converts
        raise InputError(source, "", f"not valid JSON ({e})") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise InputError(source, "", f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return data


def parse_toml(text: str, source: str | Path) -> dict:
    """Parse TOML text as `parse_json` parses JSON: a syntax error or nesting deeper than
    `MAX_JSON_DEPTH` is one `InputError(source, "", ...)`; integers past float's range read as +-inf."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(source, "", f"not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InputError(source, "", f"TOML nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise InputError(source, "", f"TOML nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return _wide_ints_to_inf(data)


def _wide_ints_to_inf(x):
    if isinstance(x, dict):
        return {k: _wide_ints_to_inf(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_wide_ints_to_inf(v) for v in x]
    if isinstance(x, int) and abs(x) > sys.float_info.max:
        return math.inf if x > 0 else -math.inf
    return x


def read_json(path: str | Path, what: str = "file") -> object:
    """Read and parse a JSON file (see `parse_json`); a missing or unreadable file is an `InputError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "", f"{what} not found") from None
    except IsADirectoryError:
        raise InputError(path, "", f"expected a {what}, got a folder") from None
    except OSError as e:
        raise InputError(path, "", f"cannot read: {e.strerror or e}") from None
    return parse_json(raw, path)


def need_file(path: Path, what: str, usual_name: str | None = None) -> None:
    """`InputError(path, "", ...)` unless `path` is a file; a folder holding `usual_name` (a run
    folder given for its checkpoint.pt) is named with the file it holds."""
    if path.is_dir():
        inside = path / usual_name if usual_name else None
        hint = f"; it holds {inside}" if inside and inside.is_file() else ""
        raise InputError(path, "", f"is a folder, not a {what}{hint}")
    if not path.is_file():
        raise InputError(path, "", f"{what} not found")


def json_depth(x) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), computed without recursion."""
    depth, stack = 0, [(x, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            depth = max(depth, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((c, d + 1) for c in v)
    return depth


def json_type(x) -> str:
    """The JSON name of a Python value's type, for messages."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    if isinstance(x, (int, float)):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, list):
        return "list"
    if isinstance(x, dict):
        return "object"
    return type(x).__name__


class Checker:
    """Checks that raise `InputError(source, field, ...)` on the first problem."""

    def __init__(self, source: str | Path):
        self.source = source

    def fail(self, field: str, message: str):
        raise InputError(self.source, field, message)

    def required(self, d: dict, key: str, parent: str):
        if key not in d:
            self.fail(f"{parent}.{key}" if parent else key, "missing required field")
        return d[key]

    def type(self, x, typ, field: str, what: str):
        if not isinstance(x, typ):
            self.fail(field, f"expected {what}, got {json_type(x)}")

    def list(self, x, field: str) -> list:
        self.type(x, list, field, "a list")
        return x

    def number(self, x, field: str) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            self.fail(field, f"expected a number, got {json_type(x)}")
        if not math.isfinite(x):
            self.fail(field, f"must be finite, got {x}")
        return float(x)

    def integer(self, x, field: str, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(x, bool) or not isinstance(x, int):
            self.fail(field, f"expected an integer, got {json_type(x)}")
        if minimum is not None and x < minimum:
            self.fail(field, f"must be >= {minimum}, got {x}")
        if maximum is not None and x > maximum:
            self.fail(field, f"must be <= {maximum}, got {x}")
        return int(x)

    def string(self, x, field: str) -> str:
        if not isinstance(x, str) or not x:
            self.fail(field, f"expected a non-empty string, got {json_type(x)}")
        return x

    def numbers(self, x, n: int, field: str) -> list[float]:
        """A list of exactly n finite numbers."""
        if not isinstance(x, list) or len(x) != n:
            self.fail(field, f"expected a list of {n} numbers, got {json_type(x)}"
                      + (f" of length {len(x)}" if isinstance(x, list) else ""))
        return [self.number(c, f"{field}[{i}]") for i, c in enumerate(x)]

    def finite_tree(self, x, field: str):
        """Every float inside nested lists/objects is finite."""
        if isinstance(x, float) and not math.isfinite(x):
            self.fail(field, f"must be finite, got {x}")
        if isinstance(x, dict):
            for k, val in x.items():
                self.finite_tree(val, f"{field}.{k}")
        elif isinstance(x, list):
            for i, val in enumerate(x):
                self.finite_tree(val, f"{field}[{i}]")


# What the renderer and trainer hold for one image: per pixel they keep tens of bytes (colour,
# depth and id buffers, masks, a batch of them), so 4096x4096 already takes gigabytes per batch;
# beyond it a size is a typo. With supersampling the rendered size is (w * ssaa) x (h * ssaa).
MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 4096 * 4096


def image_size(text: str, option: str = "--size", ssaa: int = 1) -> tuple[int, int]:
    """(width, height) from "WxH"; an `InputError(option, ...)` for anything else, and for sizes
    past `MAX_IMAGE_SIDE` per side or `MAX_IMAGE_PIXELS` per (supersampled) image."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and len(p.strip()) <= 9 for p in parts):
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            raise InputError(option, "", f"{text!r} is too large (at most {MAX_IMAGE_SIDE} pixels a side)")
        raise InputError(option, "", f"expected WxH such as 256x256, got {text!r}")
    w, h = (int(p) for p in parts)
    if w <= 0 or h <= 0:
        raise InputError(option, "", f"width and height must be positive, got {text!r}")
    if max(w, h) * ssaa > MAX_IMAGE_SIDE or w * h * ssaa * ssaa > MAX_IMAGE_PIXELS:
        sup = f" with --ssaa {ssaa}" if ssaa > 1 else ""
        raise InputError(option, "", f"{text}{sup} is too large: at most {MAX_IMAGE_SIDE} pixels a side and "
                                     f"{MAX_IMAGE_PIXELS} pixels ({int(MAX_IMAGE_PIXELS ** 0.5)}x"
                                     f"{int(MAX_IMAGE_PIXELS ** 0.5)}) per rendered image")
    return w, h


def imread(path: str | Path, flags: int | None = None):
    """`cv2.imread` (default flags: IMREAD_COLOR) that returns None, as it does for a missing or
    undecodable file, also where OpenCV raises instead: a header claiming more pixels than it
    decodes (CV_IO_MAX_IMAGE_PIXELS), for one. Callers turn None into their `InputError`."""
    import cv2

    try:
        return cv2.imread(str(path), cv2.IMREAD_COLOR if flags is None else flags)
    except cv2.error:
        return None


# A pinhole's field of view that sim2sg can render: past 179 degrees the projection of the ground
# runs to infinity, under 0.01 degrees an image spans less than a millimetre a kilometre away.
FOV_DEG = (0.01, 179.0)


def fov_deg(focal: float, size: int) -> float:
    """The field of view (degrees) of `size` pixels behind a focal length of `focal` pixels."""
    return math.degrees(2 * math.atan2(size / 2, focal))


def focal_px(hfov_deg: float, size: int) -> float:
    """The focal length (pixels) at which `size` pixels span `hfov_deg` degrees (`fov_deg`'s inverse)."""
    return size / 2 / math.tan(math.radians(hfov_deg) / 2)


def focal_problem(fx: float, fy: float, width: int, height: int) -> str | None:
    """Why focal lengths fx, fy (px) cannot image width x height pixels, or None when they can."""
    h, v = fov_deg(fx, width), fov_deg(fy, height)
    if not (FOV_DEG[0] <= h <= FOV_DEG[1] and FOV_DEG[0] <= v <= FOV_DEG[1]):
        return (f"a field of view of {h:.3g} x {v:.3g} degrees (fx={fx:g}, fy={fy:g} for {width}x{height}); "
                f"expected {FOV_DEG[0]}-{FOV_DEG[1]} degrees")
    return None
