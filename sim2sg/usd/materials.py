"""A stage's bound materials as the renderer's material table, and the texture images they use.

`MaterialTable(source)` is filled gprim by gprim during `sim2sg.usd.read`'s traversal: `material(prim)`
gives the row of the prim's bound UsdPreviewSurface (diffuseColor constant or from a UsdUVTexture
with its `scale` tint, wrapS/wrapT, optional UsdTransform2d on st and UsdPrimvarReader_float2
varname; roughness; metallic), or of its `primvars:displayColor` when nothing is bound (grey 0.5
without one). Rows and textures are numbered in first-use order and read once each: a material by
its path, a texture by its resolved file. `arrays()` packs the rows as `SceneData`'s `mat_*` fields.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from pxr import Usd, UsdGeom, UsdShade

from sim2sg.checks import imread
from sim2sg.errors import InputError
from sim2sg.render.scene import WRAP_CLAMP, WRAP_MIRROR, WRAP_REPEAT

_DEFAULT_COLOR = (0.5, 0.5, 0.5)
_DEFAULT_ROUGHNESS = 0.5
_DEFAULT_METALLIC = 0.0

_WRAP = {"repeat": WRAP_REPEAT, "clamp": WRAP_CLAMP, "black": WRAP_CLAMP, "mirror": WRAP_MIRROR,
         "useMetadata": WRAP_REPEAT}


class MaterialTable:
    """The material rows and textures of one stage being read.

    path: the stage file, the `source` of every `InputError` (missing or unreadable texture file,
    UsdUVTexture without a file). After reading: `mat_rows` holds one (color (r, g, b) linear,
    roughness, metallic, texture index or -1, (wrapS, wrapT) codes) per row; `textures` the (H, W, 3)
    float32 linear RGB images; `texture_index` maps each resolved file to its index.
    """

    def __init__(self, path: Path):
        self.path = path
        self.materials: dict[str, tuple] = {}
        self.mat_rows: list[tuple] = []
        self.textures: list[np.ndarray] = []
        self.texture_index: dict[str, int] = {}

    def texture(self, shader, field_name: str) -> int:
        inp = shader.GetInput("file")
        asset = inp.Get() if inp else None
        if asset is None or not asset.path:
            raise InputError(self.path, field_name, "UsdUVTexture without a file")
        resolved = asset.resolvedPath
        if not resolved:
            # resolve relative to the layer that authored the attribute
            for spec in inp.GetAttr().GetPropertyStack(Usd.TimeCode.Default()):
                cand = Path(spec.layer.realPath).parent / asset.path if spec.layer.realPath else None
                if cand is not None and cand.is_file():
                    resolved = str(cand)
                    break
        if not resolved or not Path(resolved).is_file():
            raise InputError(self.path, field_name, f"texture file not found: {asset.path}")
        if resolved not in self.texture_index:
            img = imread(resolved, cv2.IMREAD_UNCHANGED)
            if img is None:
                raise InputError(self.path, field_name, f"cannot read texture file: {resolved}")
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            img = img[:, :, :3][:, :, ::-1]  # BGR(A) -> RGB
            scale = 255.0 if img.dtype == np.uint8 else 65535.0 if img.dtype == np.uint16 else 1.0
            srgb = img.astype(np.float32) / scale
            cs = shader.GetInput("sourceColorSpace")
            space = cs.Get() if cs else None
            if space != "raw" and img.dtype in (np.uint8, np.uint16):
                srgb = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
            self.texture_index[resolved] = len(self.textures)
            self.textures.append(np.ascontiguousarray(srgb, dtype=np.float32))
        return self.texture_index[resolved]

    def material(self, prim) -> tuple[int, str, tuple | None]:
        """(material row, uv primvar name, UsdTransform2d (scale, rotation deg, translation) or None)."""
        mat, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
        if not mat:
            pv = UsdGeom.PrimvarsAPI(prim).GetPrimvar("displayColor")
            col = _DEFAULT_COLOR
            if pv and pv.HasValue():
                v = np.asarray(pv.ComputeFlattened(), dtype=np.float64).reshape(-1, 3)
                if len(v):
                    col = tuple(v.mean(0))
            key = f"displayColor:{col}"
            if key not in self.materials:
                self.materials[key] = (len(self.mat_rows), "st", None)
                self.mat_rows.append((col, _DEFAULT_ROUGHNESS, _DEFAULT_METALLIC, -1, (0, 0)))
            return self.materials[key]
        key = str(mat.GetPath())
        cached = self.materials.get(key)
        if cached is not None:
            return cached
        color, rough, metal, tex, wrap = _DEFAULT_COLOR, _DEFAULT_ROUGHNESS, _DEFAULT_METALLIC, -1, (0, 0)
        varname, xform = "st", None
        surf = mat.ComputeSurfaceSource()[0]
        if surf:
            def const(name, default):
                inp = surf.GetInput(name)
                if not inp:
                    return default
                if inp.HasConnectedSource():
                    return default
                v = inp.Get()
                return default if v is None else v
            d = surf.GetInput("diffuseColor")
            if d and d.HasConnectedSource():
                src = d.GetConnectedSource()[0]
                tshader = UsdShade.Shader(src.GetPrim())
                if tshader.GetIdAttr().Get() == "UsdUVTexture":
                    fname = f"{key}.diffuseColor"
                    tex = self.texture(tshader, fname)
                    sc = tshader.GetInput("scale")
                    s = sc.Get() if sc and sc.Get() is not None else (1, 1, 1, 1)
                    color = (float(s[0]), float(s[1]), float(s[2]))
                    ws, wt = tshader.GetInput("wrapS"), tshader.GetInput("wrapT")
                    wrap = (_WRAP.get(ws.Get() if ws and ws.Get() else "repeat", 0),
                            _WRAP.get(wt.Get() if wt and wt.Get() else "repeat", 0))
                    st = tshader.GetInput("st")
                    if st and st.HasConnectedSource():
                        node = UsdShade.Shader(st.GetConnectedSource()[0].GetPrim())
                        if node.GetIdAttr().Get() == "UsdTransform2d":
                            def g(n, dflt):
                                i = node.GetInput(n)
                                v = i.Get() if i else None
                                return dflt if v is None else v
                            xform = (tuple(g("scale", (1.0, 1.0))), float(g("rotation", 0.0)),
                                     tuple(g("translation", (0.0, 0.0))))
                            inp = node.GetInput("in")
                            node = UsdShade.Shader(inp.GetConnectedSource()[0].GetPrim()) if inp and inp.HasConnectedSource() else None
                        if node is not None:
                            vn = node.GetInput("varname")
                            if vn and vn.Get():
                                varname = str(vn.Get())
                else:
                    color = tuple(const("diffuseColor", _DEFAULT_COLOR))
            else:
                color = tuple(const("diffuseColor", _DEFAULT_COLOR))
            rough = float(const("roughness", _DEFAULT_ROUGHNESS))
            metal = float(const("metallic", _DEFAULT_METALLIC))
        self.mat_rows.append((tuple(float(c) for c in color), rough, metal, tex, wrap))
        result = (len(self.mat_rows) - 1, varname, xform)
        self.materials[key] = result
        return result

    def arrays(self) -> dict[str, np.ndarray]:
        """`SceneData`'s material fields for M rows: mat_color (M, 3) float32 linear RGB,
        mat_roughness and mat_metallic (M,) float32, mat_texture (M,) int32 (-1 = none), mat_wrap
        (M, 2) int32 wrap codes."""
        mats = self.mat_rows
        return {"mat_color": np.asarray([r[0] for r in mats], dtype=np.float32).reshape(-1, 3),
                "mat_roughness": np.asarray([r[1] for r in mats], dtype=np.float32),
                "mat_metallic": np.asarray([r[2] for r in mats], dtype=np.float32),
                "mat_texture": np.asarray([r[3] for r in mats], dtype=np.int32),
                "mat_wrap": np.asarray([r[4] for r in mats], dtype=np.int32).reshape(-1, 2)}


def transform_uv(uv: np.ndarray, xform: tuple) -> np.ndarray:
    """`uv` (..., 2) under a UsdTransform2d `xform` = ((sx, sy), rotation degrees, (tx, ty)):
    scale, then rotate counter-clockwise, then translate."""
    (sx, sy), rot_deg, (tx, ty) = xform
    r = math.radians(rot_deg)
    u, v = uv[..., 0] * sx, uv[..., 1] * sy
    return np.stack([math.cos(r) * u - math.sin(r) * v + tx, math.sin(r) * u + math.cos(r) * v + ty], -1)
