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
from pxr import Gf, Sdf, Usd, UsdGeom, UsdLux, UsdSemantics, UsdShade, Vt

from .. import graph as sg
from ..camera import Camera
from ..errors import InputError
from ..look import Look, Surface
from ..meshes import Mesh, context_meshes, object_mesh

# USD camera apertures are in tenths of a scene unit by the schema's convention (mm for a
# cm-unit stage); only ratios with the focal length matter for the projection.
H_APERTURE = 20.955
TEXTURE_DIR = "textures"


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


def _author_mesh(stage: Usd.Stage, path: str, vt) -> UsdGeom.Mesh:
    points, counts, indices, normals, uv, extent = vt
    mesh = UsdGeom.Mesh.Define(stage, path)
    mesh.CreatePointsAttr(points)
    mesh.CreateFaceVertexCountsAttr(counts)
    mesh.CreateFaceVertexIndicesAttr(indices)
    mesh.CreateNormalsAttr(normals)
    mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    mesh.CreateExtentAttr(extent)
    # Polygonal as authored: viewers must not subdivide our low-poly assets.
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    st = UsdGeom.PrimvarsAPI(mesh).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex)
    st.Set(uv)
    return mesh


def _author_material(stage: Usd.Stage, path: str, s: Surface) -> UsdShade.Material:
    mat = UsdShade.Material.Define(stage, path)
    pbr = UsdShade.Shader.Define(stage, f"{path}/PBR")
    pbr.CreateIdAttr("UsdPreviewSurface")
    pbr.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(float(s.roughness))
    pbr.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(float(s.metallic))
    diffuse = pbr.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    if s.texture is None:
        diffuse.Set(Gf.Vec3f(*s.color))
    else:
        reader = UsdShade.Shader.Define(stage, f"{path}/ST")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
        st_out = reader.CreateOutput("result", Sdf.ValueTypeNames.Float2)
        st_in = st_out
        if s.uv_scale != 1.0:
            xf = UsdShade.Shader.Define(stage, f"{path}/UVTransform")
            xf.CreateIdAttr("UsdTransform2d")
            xf.CreateInput("in", Sdf.ValueTypeNames.Float2).ConnectToSource(st_out)
            xf.CreateInput("scale", Sdf.ValueTypeNames.Float2).Set(Gf.Vec2f(s.uv_scale, s.uv_scale))
            st_in = xf.CreateOutput("result", Sdf.ValueTypeNames.Float2)
        tex = UsdShade.Shader.Define(stage, f"{path}/Texture")
        tex.CreateIdAttr("UsdUVTexture")
        tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(f"./{TEXTURE_DIR}/{s.texture}.png"))
        tex.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(st_in)
        tex.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("repeat")
        tex.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("repeat")
        tex.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
        # The texture is near-white; `scale` tints it with the surface color (linear).
        tex.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*s.color, 1.0))
        diffuse.ConnectToSource(tex.CreateOutput("rgb", Sdf.ValueTypeNames.Float3))
    mat.CreateSurfaceOutput().ConnectToSource(pbr.CreateOutput("surface", Sdf.ValueTypeNames.Token))
    return mat


def _bind(prim: Usd.Prim, mat: UsdShade.Material) -> None:
    UsdShade.MaterialBindingAPI.Apply(prim).Bind(mat)


def _frame_matrix(x, y, z, t) -> Gf.Matrix4d:
    """Row-vector USD matrix whose local X, Y, Z axes map to world x, y, z and origin to t."""
    return Gf.Matrix4d(
        x[0], x[1], x[2], 0.0,
        y[0], y[1], y[2], 0.0,
        z[0], z[1], z[2], 0.0,
        t[0], t[1], t[2], 1.0,
    )


def _author_camera(stage: Usd.Stage, cam: Camera) -> None:
    r = cam.rotation()  # rows: right, down, forward (OpenCV)
    usd_cam = UsdGeom.Camera.Define(stage, "/World/Camera")
    # USD cameras look down local -Z with +Y up.
    m = _frame_matrix(r[0], -r[1], -r[2], cam.position)
    usd_cam.AddTransformOp().Set(m)
    focal = cam.fx * H_APERTURE / cam.width
    v_ap = focal * cam.height / cam.fy
    usd_cam.CreateFocalLengthAttr(float(focal))
    usd_cam.CreateHorizontalApertureAttr(float(H_APERTURE))
    usd_cam.CreateVerticalApertureAttr(float(v_ap))
    usd_cam.CreateHorizontalApertureOffsetAttr(float((cam.width / 2 - cam.cx) * H_APERTURE / cam.width))
    usd_cam.CreateVerticalApertureOffsetAttr(float((cam.cy - cam.height / 2) * v_ap / cam.height))
    usd_cam.CreateClippingRangeAttr(Gf.Vec2f(float(cam.near), float(cam.far)))
    usd_cam.CreateProjectionAttr(UsdGeom.Tokens.perspective)
    usd_cam.GetPrim().SetCustomDataByKey("sim2sg:resolution", Gf.Vec2i(cam.width, cam.height))


def _author_lights(stage: Usd.Stage, look: Look) -> None:
    lt = look.lights
    UsdGeom.Xform.Define(stage, "/World/Lights")
    key = UsdLux.DistantLight.Define(stage, "/World/Lights/Key")
    z = np.asarray(lt.key_direction, dtype=np.float64)  # the light shines along its local -Z
    helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.99 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    key.AddTransformOp().Set(_frame_matrix(x, y, z, (0.0, 0.0, 0.0)))
    key.CreateIntensityAttr(float(lt.key_intensity))
    key.CreateColorAttr(Gf.Vec3f(*lt.key_color))
    key.CreateAngleAttr(0.53)
    fill = UsdLux.DomeLight.Define(stage, "/World/Lights/Fill")
    fill.CreateIntensityAttr(float(lt.fill_intensity))
    fill.CreateColorAttr(Gf.Vec3f(*lt.fill_color))


def _label(prim: Usd.Prim, category: str) -> None:
    labels = UsdSemantics.LabelsAPI.Apply(prim, "class")
    labels.CreateLabelsAttr(Vt.TokenArray([category]))
    # Legacy Omniverse semantics (Replicator before Isaac Sim 5) as plain attributes.
    prim.CreateAttribute("semantic:Semantics:params:semanticType", Sdf.ValueTypeNames.String).Set("class")
    prim.CreateAttribute("semantic:Semantics:params:semanticData", Sdf.ValueTypeNames.String).Set(category)


def build_stage(g: nx.MultiDiGraph, look: Look, mesh_of: dict[str, str],
                categories: list[str], predicates: list[str]) -> Usd.Stage:
    """An in-memory stage for graph `g` dressed by `look`.

    mesh_of: category -> object asset name (assets/objects/NAME.toml).
    categories, predicates: the environment's vocabularies, stored with the graph.
    """
    stage = Usd.Stage.CreateInMemory()
    if True:
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        world = UsdGeom.Xform.Define(stage, "/World").GetPrim()
        stage.SetDefaultPrim(world)
        stage.GetRootLayer().customLayerData = {
            "sim2sg": {
                "graph": sg.to_json(g),
                "env": g.graph["env"],
                "categories": Vt.StringArray(list(categories)),
                "predicates": Vt.StringArray(list(predicates)),
            }
        }
        _author_camera(stage, g.graph["camera"])
        _author_lights(stage, look)
        UsdGeom.Scope.Define(stage, "/World/Looks")
        UsdGeom.Xform.Define(stage, "/World/Context")
        for name, role, m in context_meshes(g.graph["context"]):
            mesh = _author_mesh(stage, f"/World/Context/{name}", _to_vt(m))
            _bind(mesh.GetPrim(), _author_material(stage, f"/World/Looks/{name}", look.context[role]))
        UsdGeom.Xform.Define(stage, "/World/Objects")
        for oid, a in sg.objects(g):
            path = f"/World/Objects/obj_{oid:04d}"
            xf = UsdGeom.Xform.Define(stage, path)
            xf.AddTranslateOp().Set(Gf.Vec3d(*a["position"]))
            xf.AddRotateZOp().Set(float(a["yaw"]))
            xf.AddScaleOp().Set(Gf.Vec3f(*a["size"]))
            prim = xf.GetPrim()
            prim.SetCustomDataByKey("sim2sg:id", int(oid))
            _label(prim, a["category"])
            mesh = _author_mesh(stage, f"{path}/Mesh", _vt_mesh(mesh_of[a["category"]]))
            _bind(mesh.GetPrim(), _author_material(stage, f"/World/Looks/obj_{oid:04d}", look.objects[oid]))
    return stage


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
    layer = Sdf.Layer.FindOrOpen(str(path))
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

