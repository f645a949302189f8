"""A USD gprim's triangles in its local frame: UsdGeom.Mesh polygons fan-triangulated with their
primvars at the triangle corners, and the implicit shapes (Cube, Sphere, Cylinder, Cone, Capsule)
tessellated with `sim2sg.scene.meshes`' primitives. Stage units, the prim's local axes; the reader
(`sim2sg.usd.read`) takes them to world meters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pxr import UsdGeom

from sim2sg.errors import InputError
from sim2sg.scene import meshes

# Tessellation of the implicit shapes (Cube, Sphere, ...): segments around the axis, rings from
# pole to pole. Our own stages hold only Mesh prims; these serve foreign stages.
SEGMENTS = 32
RINGS = 16


def _shape_mesh(type_name: str, attr) -> meshes.Mesh | None:
    """The `sim2sg.scene.meshes` tessellation of an implicit UsdGeom shape in its local frame (axis
    along +Z before `_axis_matrix`); attr(name, default) reads the prim's attribute. None for other
    types."""
    if type_name == "Cube":
        s = float(attr("size", 2.0))
        return meshes.transform(meshes.unit_box(), (s, s, s), (0, 0, 0), (0, 0, 0))
    if type_name == "Sphere":
        d = 2.0 * float(attr("radius", 1.0))
        return meshes.transform(meshes.unit_sphere(SEGMENTS, RINGS), (d, d, d), (0, 0, 0), (0, 0, 0))
    if type_name in ("Cylinder", "Cone"):
        d, h = 2.0 * float(attr("radius", 1.0)), float(attr("height", 2.0))
        unit = meshes.unit_cylinder(SEGMENTS) if type_name == "Cylinder" else meshes.unit_cone(SEGMENTS)
        return meshes.transform(unit, (d, d, h), (0, 0, 0), (0, 0, 0))
    if type_name == "Capsule":
        return meshes.capsule(float(attr("radius", 0.5)), float(attr("height", 1.0)), SEGMENTS, RINGS)
    return None


def _axis_matrix(axis: str) -> np.ndarray:
    """Maps the unit shapes' +Z axis onto the prim's `axis` (rows: new coordinates)."""
    if axis == "X":
        return np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)  # z -> x, x -> y, y -> z
    if axis == "Y":
        return np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float)  # z -> y
    return np.eye(3)


def primvar_corners(gprim, name: str, corner_v: np.ndarray, corner_fv: np.ndarray,
                    corner_face: np.ndarray, width: int) -> np.ndarray | None:
    """Values of primvar `name` at the triangle corners, (T, 3, width), or None."""
    pv = UsdGeom.PrimvarsAPI(gprim).GetPrimvar(name)
    if not pv or not pv.HasValue():
        return None
    vals = pv.ComputeFlattened()
    if vals is None:
        return None
    vals = np.asarray(vals, dtype=np.float64).reshape(-1, width)
    return interp(vals, pv.GetInterpolation(), corner_v, corner_fv, corner_face)


def interp(vals, interp, corner_v, corner_fv, corner_face):
    """Per-corner values (T, 3, ...) of `vals` (N, ...) under USD interpolation `interp` (constant;
    uniform: per face; faceVarying: per face-vertex; else per vertex); None when an index is out of range."""
    if interp == UsdGeom.Tokens.constant or len(vals) == 1:
        return np.broadcast_to(vals[0], corner_v.shape + vals.shape[1:]).copy()
    idx = {UsdGeom.Tokens.uniform: corner_face, UsdGeom.Tokens.faceVarying: corner_fv}.get(interp, corner_v)
    if idx.max(initial=-1) >= len(vals):
        return None
    return vals[idx]


def mesh(prim, path: Path):
    """(P (V,3) local points, tris (T,3) vertex idx, corner fv idx (T,3), corner face (T,3),
    normals (T,3,3) local or None, uv (T,3,2) or None) of a UsdGeom.Mesh."""
    m = UsdGeom.Mesh(prim)
    pts = m.GetPointsAttr().Get()
    counts = m.GetFaceVertexCountsAttr().Get()
    idx = m.GetFaceVertexIndicesAttr().Get()
    if pts is None or counts is None or idx is None or len(pts) == 0 or len(counts) == 0:
        return None
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    counts = np.asarray(counts, dtype=np.int64)
    idx = np.asarray(idx, dtype=np.int64)
    if counts.sum() != len(idx) or (idx.size and (idx.min() < 0 or idx.max() >= len(pts))):
        raise InputError(path, f"{prim.GetPath()}.faceVertexIndices", "indices do not match counts/points")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ntri = np.maximum(counts - 2, 0)
    face = np.repeat(np.arange(len(counts)), ntri)
    k = np.arange(ntri.sum()) - np.repeat(np.cumsum(ntri) - ntri, ntri)  # fan index within face
    s = start[face]
    corner_fv = np.stack([s, s + k + 1, s + k + 2], -1)
    if m.GetOrientationAttr().Get() == UsdGeom.Tokens.leftHanded:
        corner_fv = corner_fv[:, [0, 2, 1]]
    corner_v = idx[corner_fv]
    corner_face = np.repeat(face[:, None], 3, 1)
    normals = primvar_corners(m, "normals", corner_v, corner_fv, corner_face, 3)
    if normals is None:
        na = m.GetNormalsAttr()
        nv = na.Get() if na else None
        if nv is not None and len(nv):
            normals = interp(np.asarray(nv, dtype=np.float64).reshape(-1, 3),
                                  m.GetNormalsInterpolation(), corner_v, corner_fv, corner_face)
    return pts, corner_v, corner_fv, corner_face, normals


def shape(prim):
    """Tessellated implicit shape: (points (V,3), tris (T,3), normals (V,3), uv (V,2)), or None."""
    g = lambda name, d: (lambda v: d if v is None else v)(prim.GetAttribute(name).Get())
    m = _shape_mesh(prim.GetTypeName(), g)
    if m is None:
        return None
    p, n = m.points.astype(np.float64), m.normals.astype(np.float64)
    if prim.GetTypeName() in ("Cylinder", "Cone", "Capsule"):
        a = _axis_matrix(str(g("axis", "Z")))
        p, n = p @ a.T, n @ a.T
    return p, m.faces.astype(np.int64), n, m.uv.astype(np.float64)
