"""Stage-writing helpers shared by the renderer tests (OpenUSD tests' style: author with pxr, then
render/query back). Also a test that the helpers make valid stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pxr import Gf, Sdf, Usd, UsdGeom, UsdLux, UsdSemantics, UsdShade


def new_stage(path: Path, up: str = "Z", mpu: float = 1.0) -> Usd.Stage:
    st = Usd.Stage.CreateNew(str(path))
    UsdGeom.SetStageUpAxis(st, UsdGeom.Tokens.z if up == "Z" else UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(st, mpu)
    w = UsdGeom.Xform.Define(st, "/World")
    st.SetDefaultPrim(w.GetPrim())
    return st


def add_camera(st, eye, target, up=(0, 0, 1), focal=20.0, h_ap=20.0, v_ap=20.0, near=0.01, far=1000.0,
               path="/World/Camera", offset=(0.0, 0.0)) -> UsdGeom.Camera:
    cam = UsdGeom.Camera.Define(st, path)
    cam.CreateFocalLengthAttr(focal)
    cam.CreateHorizontalApertureAttr(h_ap)
    cam.CreateVerticalApertureAttr(v_ap)
    cam.CreateHorizontalApertureOffsetAttr(offset[0])
    cam.CreateVerticalApertureOffsetAttr(offset[1])
    cam.CreateClippingRangeAttr(Gf.Vec2f(near, far))
    m = Gf.Matrix4d().SetLookAt(Gf.Vec3d(*eye), Gf.Vec3d(*target), Gf.Vec3d(*up)).GetInverse()
    UsdGeom.Xformable(cam).AddTransformOp().Set(m)
    return cam


def add_lights(st, key=1.0, dome=0.3, rotate=(30.0, 0.0, 20.0)):
    k = UsdLux.DistantLight.Define(st, "/World/Lights/Key")
    k.CreateIntensityAttr(key)
    UsdGeom.Xformable(k).AddRotateXYZOp().Set(Gf.Vec3f(*rotate))
    UsdLux.DomeLight.Define(st, "/World/Lights/Fill").CreateIntensityAttr(dome)


def label(prim, name: str, object_id: int | None = None, legacy: bool = False):
    if legacy:
        prim.CreateAttribute("semantic:Semantics:params:semanticType", Sdf.ValueTypeNames.String).Set("class")
        prim.CreateAttribute("semantic:Semantics:params:semanticData", Sdf.ValueTypeNames.String).Set(name)
    else:
        UsdSemantics.LabelsAPI.Apply(prim, "class").CreateLabelsAttr().Set([name])
    if object_id is not None:
        prim.SetCustomDataByKey("sim2sg:id", object_id)


def material(st, path, color=(0.5, 0.5, 0.5), roughness=0.5, metallic=0.0, texture: str | None = None):
    mat = UsdShade.Material.Define(st, path)
    sh = UsdShade.Shader.Define(st, path + "/Surface")
    sh.CreateIdAttr("UsdPreviewSurface")
    if texture is None:
        sh.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).Set(Gf.Vec3f(*color))
    else:
        reader = UsdShade.Shader.Define(st, path + "/St")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.Token).Set("st")
        tex = UsdShade.Shader.Define(st, path + "/Tex")
        tex.CreateIdAttr("UsdUVTexture")
        tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(texture)
        tex.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
        tex.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("repeat")
        tex.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
        sh.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(tex.ConnectableAPI(), "rgb")
    sh.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(roughness)
    sh.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(metallic)
    mat.CreateSurfaceOutput().ConnectToSource(sh.ConnectableAPI(), "surface")
    return mat


def bind(prim, mat):
    UsdShade.MaterialBindingAPI.Apply(prim).Bind(mat)


def quad(st, path, corners, st_coords=None) -> UsdGeom.Mesh:
    m = UsdGeom.Mesh.Define(st, path)
    m.CreatePointsAttr([Gf.Vec3f(*c) for c in corners])
    m.CreateFaceVertexCountsAttr([4])
    m.CreateFaceVertexIndicesAttr([0, 1, 2, 3])
    if st_coords is not None:
        pv = UsdGeom.PrimvarsAPI(m).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.faceVarying)
        pv.Set([Gf.Vec2f(*c) for c in st_coords])
    return m


def ground(st, half=50.0, z=0.0):
    return quad(st, "/World/Context/Ground", [(-half, -half, z), (half, -half, z), (half, half, z), (-half, half, z)])


def shape(st, path, kind, translate=(0, 0, 0), label_name=None, object_id=None, **attrs):
    x = UsdGeom.Xform.Define(st, path)
    UsdGeom.Xformable(x).AddTranslateOp().Set(Gf.Vec3d(*translate))
    p = st.DefinePrim(path + "/Geom", kind)
    for k, v in attrs.items():
        p.GetAttribute(k).Set(v)
    if label_name is not None:
        label(x.GetPrim(), label_name, object_id)
    return x, p


def clevr_stage(path: Path, n: int = 6, seed: int = 0) -> Path:
    """A small CLEVR-like stage: ground, key + dome light, n labelled cubes/spheres/cylinders."""
    rng = np.random.default_rng(seed)
    st = new_stage(path)
    add_camera(st, (7, -7, 6), (0, 0, 0.3), focal=35, h_ap=36, v_ap=36)
    add_lights(st)
    ground(st, 20.0)
    kinds = ["Cube", "Sphere", "Cylinder"]
    for i in range(n):
        kind = kinds[i % 3]
        attrs = {"size": 1.0} if kind == "Cube" else {"radius": 0.5}
        if kind == "Cylinder":
            attrs["height"] = 1.0
        x, p = shape(st, f"/World/Objects/obj_{i:04d}", kind, (rng.uniform(-3, 3), rng.uniform(-3, 3), 0.5),
                     kind.lower(), i, **attrs)
        bind(p, material(st, f"/World/Looks/m{i}", tuple(rng.uniform(0.1, 0.9, 3)), 0.2 + 0.6 * (i % 2), float(i % 2)))
    st.GetRootLayer().Save()
    return path


def test_helpers_make_a_loadable_stage(tmp_path):
    from sim2sg.usd.read import load_scene

    s = load_scene(clevr_stage(tmp_path / "c.usda", n=3), 64, 64)
    assert s.num_instances == 3 and s.categories == ("cube", "cylinder", "sphere")
