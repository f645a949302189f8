"""Scene graph + Look -> a valid, single-layer OpenUSD stage (and the graph back from a stage).

Stage layout (docs/formats.md): /World (defaultPrim; upAxis Z, metersPerUnit 1), /World/Camera,
/World/Lights/{Key,Fill}, /World/Context/*, /World/Objects/obj_NNNN (Xform: translate, rotateZ,
scale of the unit object frame; a Mesh child), /World/Looks/* (UsdPreviewSurface materials).
The layer's customLayerData["sim2sg"] stores the scene graph JSON, so a stage alone suffices to
render and label it. Authoring takes no randomness: the same graph and look give the same bytes.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import networkx as nx
import numpy as np
from pxr import Gf, Sdf, Usd, UsdGeom, Vt

from sim2sg.errors import InputError
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera
from sim2sg.scene.look import Look, Surface
from sim2sg.scene.meshes import Mesh, context_meshes, object_mesh

# USD camera apertures are in tenths of a scene unit by the schema's convention (mm for a
# cm-unit stage); only ratios with the focal length matter for the projection.
H_APERTURE = 20.955
TEXTURE_DIR = "textures"


# Authoring goes through the Sdf layer API inside one Sdf.ChangeBlock: several times faster than
# UsdGeom/UsdShade `Define` calls, which recompose the stage after every edit. The specs written are
# exactly what those schema calls author (tests read the stage back through the Usd schema API).
_T = Sdf.ValueTypeNames
_UNIFORM = Sdf.VariabilityUniform


def _prim(layer: Sdf.Layer, path: str, type_name: str, api: tuple[str, ...] = ()) -> Sdf.PrimSpec:
    spec = Sdf.CreatePrimInLayer(layer, path)
    spec.specifier = Sdf.SpecifierDef
    spec.typeName = type_name
    if api:
        spec.SetInfo("apiSchemas", Sdf.TokenListOp.Create(prependedItems=list(api)))
    return spec


def _attr(spec: Sdf.PrimSpec, name: str, type_name, value=None, uniform: bool = False,
          connect: str | None = None, custom: bool = False, **info) -> Sdf.AttributeSpec:
    """An attribute spec; `custom` for attributes outside any schema (Blender imports those as
    custom properties)."""
    a = Sdf.AttributeSpec(spec, name, type_name, _UNIFORM if uniform else Sdf.VariabilityVarying, custom)
    if value is not None:
        a.default = value
    if connect is not None:
        a.connectionPathList.Prepend(Sdf.Path(connect))
    for k, v in info.items():
        a.SetInfo(k, v)
    return a


def _rel(spec: Sdf.PrimSpec, name: str, target: str) -> None:
    r = Sdf.RelationshipSpec(spec, name, False)
    r.targetPathList.Prepend(Sdf.Path(target))


@functools.lru_cache(maxsize=None)
def _vt_mesh(name: str):
    """Vt arrays of object asset `name`, built once: authoring reuses them for every instance."""
    return _to_vt(object_mesh(name))


def _to_vt(m: Mesh):
    return (
        Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(m.points, np.float32)),
        Vt.IntArray(len(m.faces), 3),
        Vt.IntArray.FromNumpy(np.ascontiguousarray(m.faces.reshape(-1), np.int32)),
        Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(m.normals, np.float32)),
        Vt.Vec2fArray.FromNumpy(np.ascontiguousarray(m.uv, np.float32)),
        Vt.Vec3fArray([Gf.Vec3f(*map(float, m.points.min(0))), Gf.Vec3f(*map(float, m.points.max(0)))]),
    )


def _author_mesh(layer: Sdf.Layer, path: str, vt, material: str) -> Sdf.PrimSpec:
    points, counts, indices, normals, uv, extent = vt
    spec = _prim(layer, path, "Mesh", ("MaterialBindingAPI",))
    _attr(spec, "points", _T.Point3fArray, points)
    _attr(spec, "faceVertexCounts", _T.IntArray, counts)
    _attr(spec, "faceVertexIndices", _T.IntArray, indices)
    _attr(spec, "normals", _T.Normal3fArray, normals, interpolation=UsdGeom.Tokens.vertex)
    _attr(spec, "extent", _T.Float3Array, extent)
    # Polygonal as authored: viewers must not subdivide our low-poly assets.
    _attr(spec, "subdivisionScheme", _T.Token, UsdGeom.Tokens.none, uniform=True)
    _attr(spec, "primvars:st", _T.TexCoord2fArray, uv, interpolation=UsdGeom.Tokens.vertex)
    _rel(spec, "material:binding", material)
    return spec


def _shader(layer: Sdf.Layer, path: str, shader_id: str) -> Sdf.PrimSpec:
    spec = _prim(layer, path, "Shader")
    _attr(spec, "info:id", _T.Token, shader_id, uniform=True)
    return spec


def _author_material(layer: Sdf.Layer, path: str, s: Surface, texture_root: str) -> str:
    """A UsdPreviewSurface material at `path`; returns `path`. Texture files are authored as
    `texture_root/NAME.png` (relative "./textures" for stages written beside their textures)."""
    mat = _prim(layer, path, "Material")
    _attr(mat, "outputs:surface", _T.Token, connect=f"{path}/PBR.outputs:surface")
    pbr = _shader(layer, f"{path}/PBR", "UsdPreviewSurface")
    _attr(pbr, "inputs:roughness", _T.Float, float(s.roughness))
    _attr(pbr, "inputs:metallic", _T.Float, float(s.metallic))
    _attr(pbr, "outputs:surface", _T.Token)
    if s.texture is None:
        _attr(pbr, "inputs:diffuseColor", _T.Color3f, Gf.Vec3f(*s.color))
        return path
    _attr(pbr, "inputs:diffuseColor", _T.Color3f, connect=f"{path}/Texture.outputs:rgb")
    reader = _shader(layer, f"{path}/ST", "UsdPrimvarReader_float2")
    _attr(reader, "inputs:varname", _T.String, "st")
    _attr(reader, "outputs:result", _T.Float2)
    st_source = f"{path}/ST.outputs:result"
    if s.uv_scale != 1.0:
        xf = _shader(layer, f"{path}/UVTransform", "UsdTransform2d")
        _attr(xf, "inputs:in", _T.Float2, connect=st_source)
        _attr(xf, "inputs:scale", _T.Float2, Gf.Vec2f(s.uv_scale, s.uv_scale))
        _attr(xf, "outputs:result", _T.Float2)
        st_source = f"{path}/UVTransform.outputs:result"
    tex = _shader(layer, f"{path}/Texture", "UsdUVTexture")
    _attr(tex, "inputs:file", _T.Asset, Sdf.AssetPath(f"{texture_root}/{s.texture}.png"))
    _attr(tex, "inputs:st", _T.Float2, connect=st_source)
    _attr(tex, "inputs:wrapS", _T.Token, "repeat")
    _attr(tex, "inputs:wrapT", _T.Token, "repeat")
    _attr(tex, "inputs:sourceColorSpace", _T.Token, "sRGB")
    # The texture is near-white; `scale` tints it with the surface color (linear).
    _attr(tex, "inputs:scale", _T.Float4, Gf.Vec4f(*s.color, 1.0))
    _attr(tex, "outputs:rgb", _T.Float3)
    return path


def _frame_matrix(x, y, z, t) -> Gf.Matrix4d:
    """Row-vector USD matrix whose local X, Y, Z axes map to world x, y, z and origin to t."""
    return Gf.Matrix4d(
        x[0], x[1], x[2], 0.0,
        y[0], y[1], y[2], 0.0,
        z[0], z[1], z[2], 0.0,
        t[0], t[1], t[2], 1.0,
    )


def _transform_op(spec: Sdf.PrimSpec, m: Gf.Matrix4d) -> None:
    _attr(spec, "xformOp:transform", _T.Matrix4d, m)
    _attr(spec, "xformOpOrder", _T.TokenArray, Vt.TokenArray(["xformOp:transform"]), uniform=True)


def _author_camera(layer: Sdf.Layer, cam: Camera) -> None:
    r = cam.rotation()  # rows: right, down, forward (OpenCV)
    spec = _prim(layer, "/World/Camera", "Camera")
    # USD cameras look down local -Z with +Y up.
    _transform_op(spec, _frame_matrix(r[0], -r[1], -r[2], cam.position))
    focal = cam.fx * H_APERTURE / cam.width
    v_ap = focal * cam.height / cam.fy
    _attr(spec, "focalLength", _T.Float, float(focal))
    _attr(spec, "horizontalAperture", _T.Float, float(H_APERTURE))
    _attr(spec, "verticalAperture", _T.Float, float(v_ap))
    _attr(spec, "horizontalApertureOffset", _T.Float, float((cam.width / 2 - cam.cx) * H_APERTURE / cam.width))
    _attr(spec, "verticalApertureOffset", _T.Float, float((cam.cy - cam.height / 2) * v_ap / cam.height))
    _attr(spec, "clippingRange", _T.Float2, Gf.Vec2f(float(cam.near), float(cam.far)))
    _attr(spec, "projection", _T.Token, UsdGeom.Tokens.perspective)
    spec.customData = {"sim2sg": {"resolution": Gf.Vec2i(cam.width, cam.height)}}  # key path sim2sg:resolution


def _author_lights(layer: Sdf.Layer, look: Look) -> None:
    lt = look.lights
    _prim(layer, "/World/Lights", "Xform")
    key = _prim(layer, "/World/Lights/Key", "DistantLight")
    z = np.asarray(lt.key_direction, dtype=np.float64)  # the light shines along its local -Z
    helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.99 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    _transform_op(key, _frame_matrix(x, y, z, (0.0, 0.0, 0.0)))
    _attr(key, "inputs:intensity", _T.Float, float(lt.key_intensity))
    _attr(key, "inputs:color", _T.Color3f, Gf.Vec3f(*lt.key_color))
    _attr(key, "inputs:angle", _T.Float, 0.53)
    fill = _prim(layer, "/World/Lights/Fill", "DomeLight")
    _attr(fill, "inputs:intensity", _T.Float, float(lt.fill_intensity))
    _attr(fill, "inputs:color", _T.Color3f, Gf.Vec3f(*lt.fill_color))


def build_stage(g: nx.MultiDiGraph, look: Look, mesh_of: dict[str, str],
                categories: list[str], predicates: list[str], texture_root: str = f"./{TEXTURE_DIR}") -> Usd.Stage:
    """An in-memory stage for graph `g` dressed by `look`.

    mesh_of: category -> object asset name (assets/objects/NAME.toml).
    categories, predicates: the environment's vocabularies, stored with the graph.
    texture_root: folder of the texture files as authored; the default is relative to the stage
    file; an in-memory stage that is rendered without being written needs an absolute folder.
    """
    layer = Sdf.Layer.CreateAnonymous(".usda")
    with Sdf.ChangeBlock():
        layer.customLayerData = {
            "sim2sg": {
                "graph": sg.to_json(g),
                "env": g.graph["env"],
                "categories": Vt.StringArray(list(categories)),
                "predicates": Vt.StringArray(list(predicates)),
            }
        }
        layer.pseudoRoot.SetInfo("upAxis", UsdGeom.Tokens.z)
        layer.pseudoRoot.SetInfo("metersPerUnit", 1.0)
        layer.defaultPrim = "World"
        _prim(layer, "/World", "Xform")
        _author_camera(layer, g.graph["camera"])
        _author_lights(layer, look)
        _prim(layer, "/World/Looks", "Scope")
        _prim(layer, "/World/Context", "Xform")
        for name, role, m in context_meshes(g.graph["context"]):
            mat = _author_material(layer, f"/World/Looks/{name}", look.context[role], texture_root)
            _author_mesh(layer, f"/World/Context/{name}", _to_vt(m), mat)
        _prim(layer, "/World/Objects", "Xform")
        for oid, a in sg.objects(g):
            path = f"/World/Objects/obj_{oid:04d}"
            cat = a["category"]
            xf = _prim(layer, path, "Xform", ("SemanticsLabelsAPI:class",))
            _attr(xf, "xformOp:translate", _T.Double3, Gf.Vec3d(*a["position"]))
            _attr(xf, "xformOp:rotateZ", _T.Float, float(a["yaw"]))
            _attr(xf, "xformOp:scale", _T.Float3, Gf.Vec3f(*a["size"]))
            _attr(xf, "xformOpOrder", _T.TokenArray,
                  Vt.TokenArray(["xformOp:translate", "xformOp:rotateZ", "xformOp:scale"]), uniform=True)
            xf.customData = {"sim2sg": {"id": int(oid)}}  # read as GetCustomDataByKey("sim2sg:id")
            _attr(xf, "semantics:labels:class", _T.TokenArray, Vt.TokenArray([cat]))
            # Legacy Omniverse semantics (Replicator before Isaac Sim 5) as plain attributes.
            _attr(xf, "semantic:Semantics:params:semanticType", _T.String, "class", custom=True)
            _attr(xf, "semantic:Semantics:params:semanticData", _T.String, cat, custom=True)
            mat = _author_material(layer, f"/World/Looks/obj_{oid:04d}", look.objects[oid], texture_root)
            # Blender merges an Xform with its only Mesh and keeps the Mesh's name: carry the id.
            _author_mesh(layer, f"{path}/obj_{oid:04d}_mesh", _vt_mesh(mesh_of[cat]), mat)
    return Usd.Stage.Open(layer)


def write_stage(stage: Usd.Stage, path: str | Path) -> None:
    """Export `stage` to `path` (.usda or .usdc by extension) atomically: temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        if not stage.GetRootLayer().Export(str(tmp)):
            raise OSError(f"USD could not write {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_graph_from_stage(path: str | Path) -> tuple[nx.MultiDiGraph, dict]:
    """(graph, info) stored in a sim2sg stage; info has env, categories, predicates."""
    from sim2sg.usd.read import usd_error

    try:
        layer = Sdf.Layer.FindOrOpen(str(path))
    except Exception as e:  # pxr.Tf.ErrorException: not a layer, corrupt, truncated
        raise InputError(path, "", f"cannot open as a USD layer: {usd_error(e)}") from None
    if layer is None:
        raise InputError(path, "", "cannot open as a USD layer")
    data = dict(layer.customLayerData).get("sim2sg")
    if not data or "graph" not in data:
        raise InputError(path, "customLayerData.sim2sg.graph", "no sim2sg scene graph stored in this stage")
    info = {"env": data.get("env"), "categories": list(data.get("categories", [])),
            "predicates": list(data.get("predicates", []))}
    g = sg.from_json(data["graph"], source=f"{path}:customLayerData.sim2sg.graph",
                     categories=info["categories"] or None, predicates=info["predicates"] or None)
    return g, info


def validate(path_or_stage) -> list[str]:
    """Error and warning messages from OpenUSD's own validators (`pxr.UsdValidation`), all loaded."""
    from pxr import UsdValidation

    stage = path_or_stage if isinstance(path_or_stage, Usd.Stage) else Usd.Stage.Open(str(path_or_stage))
    ctx = UsdValidation.ValidationContext(UsdValidation.ValidationRegistry().GetOrLoadAllValidators())
    errors = ctx.Validate(stage)
    return [f"{e.GetType()}: {e.GetMessage()}" for e in errors]

