"""Read any valid USD stage into plain numpy scene arrays for the rasterizer.

`load_scene(path, width, height) -> SceneData` (the renderer's input, `sim2sg.render.scene`).
Everything in a `SceneData` is in sim2sg's world frame: right-handed, +Z up, meters. Stages with
`upAxis = "Y"` are rotated +90 degrees about X (Y-up -> Z-up) and every length is multiplied by the
stage's `metersPerUnit`, so depth comes out in meters for any stage.

What is read:
- Geometry: UsdGeom.Mesh (fan-triangulated; `primvars:st` and normals at any interpolation,
  indexed or not) and the shapes Cube, Sphere, Cylinder, Cone, Capsule (`sim2sg.usd.gprims`), in
  world space through `UsdGeom.XformCache`. Invisible prims and purposes `proxy`/`guide` are skipped.
- Materials: the bound UsdPreviewSurface (`ComputeBoundMaterial`): diffuseColor constant or from a
  UsdUVTexture (file resolved relative to its layer, `scale` as a tint, wrapS/wrapT, optional
  UsdTransform2d on st, UsdPrimvarReader_float2 varname), roughness, metallic. Unbound gprims use
  `primvars:displayColor` (else grey 0.5). Read by `sim2sg.usd.materials.MaterialTable`.
- Lights: distant, dome and sphere lights (`sim2sg.usd.lights`); a stage without lights gets a
  default head light plus ambient (`_DEFAULT_*`).
- Camera: the first UsdGeom.Camera in traversal order (or the one named by `camera=`), as a
  `sim2sg.scene.camera.Camera` at the requested image size (the lens's apertures set the aspect).
- Instances: every prim with a class label (UsdSemantics.LabelsAPI `class` or legacy Omniverse
  `semantic:*:params:semanticData` with semanticType "class") is one instance with all gprims below
  it; unlabelled gprims are background (instance 0).

Degenerate triangles (zero area, e.g. repeated indices) are dropped silently; a stage whose
geometry is empty after that is an `InputError` ("no geometry"). NaN/inf points, and world
coordinates that are not finite or lie beyond `MAX_COORDINATE` meters (overflowing transforms, 1e308
positions: the float32 renderer cannot hold them) are an `InputError` naming the prim, as are a
missing camera, a missing texture file and a missing sublayer. A file USD cannot open (not a
layer, corrupt or truncated crate) is an `InputError` with USD's own reason.

One traversal: geometry, lights, camera and instances are read in a single pass over the stage
(`_Reader.read` dispatches each prim to `light` or `gprim`, then `assemble` packs the `SceneData`),
sharing the reader's caches (owners, and the material table that `materials.py` fills). One idea:
the traversal, frames and units, instances and the assembly; what one prim holds is read by
`gprims.py`, `lights.py` and `materials.py`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
from pxr import Gf, Sdf, Usd, UsdGeom

from sim2sg.errors import InputError
from sim2sg.render.scene import SceneData
from sim2sg.scene.camera import Camera
from sim2sg.usd.gprims import mesh, primvar_corners, shape
from sim2sg.usd.lights import Light, is_light, light_of
from sim2sg.usd.materials import MaterialTable, transform_uv

# Farthest world coordinate (meters) a stage may place geometry at: float32 spacing there is
# already ~1 m, and past ~1e19 the rasterizer's squared distances overflow.
MAX_COORDINATE = 1e7

_DEFAULT_LIGHT = 1.0  # head light radiance when a stage has no light at all
_DEFAULT_AMBIENT = 0.3


def _pruned(prim) -> bool:
    """Whether nothing at or below `prim` is drawn: it is invisible, or its purpose is proxy or
    guide (we render the default/render purposes)."""
    if not prim.IsA(UsdGeom.Imageable):
        return False
    img = UsdGeom.Imageable(prim)
    vis = img.GetVisibilityAttr().Get()
    purpose = img.GetPurposeAttr().Get()
    return vis == UsdGeom.Tokens.invisible or purpose in (UsdGeom.Tokens.proxy, UsdGeom.Tokens.guide)


def _light_arrays(lights: list[Light], head_dir: np.ndarray) -> dict[str, np.ndarray]:
    """`SceneData`'s light fields (float32, traversal order): distant_dir/distant_rgb (L, 3),
    sphere_pos/sphere_rgb (S, 3), sphere_radius (S,), ambient (3,) = the sum of the dome lights.
    A stage with none of these gets one head light along `head_dir` ((3,) world, the camera's
    forward) plus `_DEFAULT_AMBIENT`, so that something is visible."""
    distant = [lt for lt in lights if lt.kind == "distant"]
    sphere = [lt for lt in lights if lt.kind == "sphere"]
    domes = [lt for lt in lights if lt.kind == "dome"]
    distant_dir, distant_rgb = [lt.direction for lt in distant], [lt.rgb for lt in distant]
    ambient = np.zeros(3)
    for lt in domes:
        ambient = ambient + lt.rgb
    if not distant and not sphere and not domes:
        distant_dir, distant_rgb = [head_dir], [np.full(3, _DEFAULT_LIGHT)]
        ambient = np.full(3, _DEFAULT_AMBIENT)
    return {"distant_dir": _f32(distant_dir, (-1, 3)), "distant_rgb": _f32(distant_rgb, (-1, 3)),
            "sphere_pos": _f32([lt.position for lt in sphere], (-1, 3)),
            "sphere_radius": _f32([lt.radius for lt in sphere], (-1,)),
            "sphere_rgb": _f32([lt.rgb for lt in sphere], (-1, 3)), "ambient": _f32(ambient, (3,))}


@dataclasses.dataclass(frozen=True)
class _Triangles:
    """One gprim's K non-degenerate triangles in authored order, in sim2sg's world frame.

    pos: (K, 3, 3) float64 corner positions, meters. normal: (K, 3, 3) float64 unit corner normals.
    uv: (K, 3, 2) float64 corner texture coordinates (UsdTransform2d applied).
    material: row of the reader's material table. instance: 1-based instance, 0 = background.
    """

    pos: np.ndarray
    normal: np.ndarray
    uv: np.ndarray
    material: int
    instance: int


def _with_missing_labels(categories: tuple, labels: list[str]) -> tuple:
    """The category vocabulary: `categories` (the sorted labels when empty), then any label outside
    it, sorted, so that every instance has an id (1-based index)."""
    if not categories:
        categories = tuple(sorted(set(labels)))
    missing = sorted(set(labels) - set(categories))
    if missing:
        categories = categories + tuple(missing)  # labels outside the vocabulary get ids after it
    return categories


def _f32(a, shape) -> np.ndarray:
    """`a` as a C-contiguous float32 array of `shape`."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(shape))


# ---- the reader ------------------------------------------------------------------------------
class _Reader:
    def __init__(self, path: Path, width: int, height: int, camera_name: str | None,
                 stage: "Usd.Stage | None" = None):
        self.path = path
        self.width, self.height = int(width), int(height)
        self.camera_name = camera_name
        if stage is None:
            try:
                stage = Usd.Stage.Open(str(path))
            except Exception as e:  # pxr.Tf.ErrorException: not a layer, corrupt, truncated
                raise InputError(path, "", f"cannot open as a USD stage: {usd_error(e)}") from None
        self.stage = stage
        if self.stage is None:
            raise InputError(path, "", "cannot open as a USD stage")
        check_sublayers(self.stage.GetRootLayer(), path)
        up = UsdGeom.GetStageUpAxis(self.stage)
        mpu = float(UsdGeom.GetStageMetersPerUnit(self.stage))
        if not 0 < mpu < math.inf:
            raise InputError(path, "metersPerUnit", f"must be positive and finite, got {mpu}")
        rot = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float) if up == "Y" else np.eye(3)
        self.rot = rot  # stage axes -> Z-up axes
        self.mpu = mpu
        self.conv = rot * mpu  # stage coordinates -> world meters (column vectors: conv @ p)
        self.xc = UsdGeom.XformCache(Usd.TimeCode.Default())
        self.materials = MaterialTable(path)  # rows and textures in first-use order
        self.owner_cache: dict[str, int] = {}
        self.inst_paths: list[str] = []
        self.inst_labels: list[str] = []
        self.inst_ids: list[int | None] = []
        self.skipped: list[tuple[str, str]] = []

    # -- helpers
    def world(self, prim) -> np.ndarray:
        """(4, 4) row-vector local-to-world matrix of `prim` in stage units (USD convention)."""
        return np.array(self.xc.GetLocalToWorldTransform(prim), dtype=np.float64)

    def to_world_points(self, m: np.ndarray, p: np.ndarray) -> np.ndarray:
        ph = p @ m[:3, :3] + m[3, :3]
        return ph @ self.conv.T

    def to_world_normals(self, m: np.ndarray, n: np.ndarray) -> np.ndarray:
        inv_t = np.linalg.inv(m[:3, :3]).T
        out = n @ inv_t @ self.rot.T
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    @staticmethod
    def class_label(prim) -> str | None:
        a = prim.GetAttribute("semantics:labels:class")
        if a and a.HasValue():
            v = a.Get()
            if v is not None and len(v) > 0:
                return str(v[0])
        for attr in prim.GetAttributes():
            name = attr.GetName()
            if name.startswith("semantic:") and name.endswith(":params:semanticData"):
                typ = prim.GetAttribute(name.replace(":semanticData", ":semanticType"))
                if typ and typ.Get() == "class" and attr.Get():
                    return str(attr.Get())
        return None

    def owner(self, prim) -> int:
        """Instance index (1-based) of the nearest labelled ancestor-or-self, 0 = background."""
        chain = []
        p = prim
        result = 0
        while p and p.GetPath() != Sdf.Path.absoluteRootPath:
            key = str(p.GetPath())
            if key in self.owner_cache:
                result = self.owner_cache[key]
                break
            label = self.class_label(p)
            if label is not None:
                self.inst_paths.append(key)
                self.inst_labels.append(label)
                sid = p.GetCustomDataByKey("sim2sg:id")
                self.inst_ids.append(None if sid is None else int(sid))
                result = len(self.inst_paths)
                self.owner_cache[key] = result
                break
            chain.append(key)
            p = p.GetParent()
        for key in chain:
            self.owner_cache[key] = result
        return result

    # -- geometry
    # -- traversal
    def read(self) -> SceneData:
        """The whole stage as a `SceneData`: one pass in traversal order (instance proxies
        included), dispatching each prim to the camera choice, `light` or `gprim`; `assemble` then
        checks and packs what the pass collected. Triangles and instances keep traversal order."""
        cam_prim = None
        lights: list[Light] = []
        tris: list[_Triangles] = []
        it = iter(Usd.PrimRange(self.stage.GetPseudoRoot(), Usd.TraverseInstanceProxies()))
        for prim in it:
            if prim.IsPseudoRoot():
                continue
            if _pruned(prim):
                it.PruneChildren()
                continue
            if prim.IsA(UsdGeom.Camera):
                if cam_prim is None and self.wanted_camera(prim):
                    cam_prim = prim
                continue
            if is_light(prim):
                light = light_of(prim, self.world(prim), self.rot, self.conv, self.mpu)
                if light is not None:
                    lights.append(light)
                continue
            if not prim.IsA(UsdGeom.Gprim):
                if prim.IsA(UsdGeom.PointInstancer):  # instances the renderer does not expand
                    self.skipped.append((str(prim.GetPath()), str(prim.GetTypeName())))
                    it.PruneChildren()
                continue
            got = self.gprim(prim)
            if got is not None:
                tris.append(got)
        return self.assemble(cam_prim, lights, tris)

    def wanted_camera(self, prim) -> bool:
        """Whether a UsdGeom.Camera prim is the one asked for (any, when no `camera=` was given)."""
        return (self.camera_name is None or prim.GetName() == self.camera_name
                or str(prim.GetPath()) == self.camera_name)

    # -- lights
    # -- gprims
    def gprim(self, prim) -> _Triangles | None:
        """The triangles of one visible gprim (Mesh or implicit shape) in world frame, degenerate
        ones dropped, with its material row and instance; None when it has no geometry to give (an
        empty mesh, or a gprim kind the renderer does not draw, which is named in `skipped`)."""
        pth = str(prim.GetPath())
        m = self.world(prim)
        got = self.local_triangles(prim)
        if got is None:
            return None
        corners, normals, uv, mat, xform = got
        pos, normal, keep = self.world_triangles(pth, m, corners, normals)
        if uv is None:
            uv = np.zeros((len(pos), 3, 2))
        if xform is not None:
            uv = transform_uv(uv, xform)
        inst = self.owner(prim)
        return _Triangles(pos[keep], normal[keep], uv[keep], mat, inst)

    def local_triangles(self, prim):
        """(corners (T, 3, 3) float64 in the prim's local frame and stage units, corner normals
        (T, 3, 3) local or None, corner uv (T, 3, 2) or None, material row, UsdTransform2d or None)
        of a Mesh or implicit shape, T triangles in authored order; None for an empty mesh or (named
        in `skipped`) a gprim kind that is not drawn (curves, points, ...)."""
        if prim.IsA(UsdGeom.Mesh):
            got = mesh(prim, self.path)
            if got is None:
                return None
            pts, cv, cfv, cface, normals = got
            if not np.isfinite(pts).all():
                raise InputError(self.path, f"{prim.GetPath()}.points", "NaN or infinite point coordinates")
            mat, varname, xform = self.materials.material(prim)
            uv = primvar_corners(prim, varname, cv, cfv, cface, 2)
            return pts[cv], normals, uv, mat, xform
        got = shape(prim)
        if got is None:
            self.skipped.append((str(prim.GetPath()), str(prim.GetTypeName())))
            return None
        pts, t, n, uv = got
        mat, varname, xform = self.materials.material(prim)
        return pts[t], n[t], uv[t], mat, xform

    def world_triangles(self, pth: str, m: np.ndarray, corners: np.ndarray, normals: np.ndarray | None):
        """(positions (T, 3, 3) float64 world meters, unit normals (T, 3, 3) world, keep (T,) bool:
        not degenerate) of local `corners` under the (4, 4) local-to-world `m`. Corner normals that
        are missing or not finite become the face normal. World coordinates that are not finite or
        beyond `MAX_COORDINATE` are an `InputError` naming the prim path `pth`."""
        wp = self.to_world_points(m, corners.reshape(-1, 3)).reshape(-1, 3, 3)
        with np.errstate(over="ignore", invalid="ignore"):
            far = ~(np.abs(wp) <= MAX_COORDINATE)  # NaN and inf too
        if far.any():
            raise InputError(self.path, pth, f"world coordinates not finite or beyond {MAX_COORDINATE:g} m "
                                             "(check its points and transforms)")
        e1, e2 = wp[:, 1] - wp[:, 0], wp[:, 2] - wp[:, 0]
        fn = np.cross(e1, e2)
        area = np.linalg.norm(fn, axis=-1)
        scale = max(float(np.abs(wp).max(initial=0.0)), 1e-6)
        keep = area > 1e-12 * scale * scale  # drop degenerate triangles (zero area)
        if normals is None or not np.isfinite(normals).all() or abs(np.linalg.det(m[:3, :3])) < 1e-300:  # flat: no inverse
            wn = np.repeat((fn / np.maximum(area, 1e-30)[:, None])[:, None, :], 3, 1)
        else:
            wn = self.to_world_normals(m, normals.reshape(-1, 3)).reshape(-1, 3, 3)
        return wp, wn, keep

    # -- assembly
    def assemble(self, cam_prim, lights: list[Light], tris: list[_Triangles]) -> SceneData:
        """The `SceneData` of what one pass collected: the chosen camera, the lights (a head light
        plus ambient when there are none), the triangles in traversal order, the material table and
        the instances with their category ids. No camera or no triangle is an `InputError`."""
        if cam_prim is None:
            raise InputError(self.path, "camera", "no UsdGeom.Camera in the stage" if self.camera_name is None
                             else f"no camera named {self.camera_name!r}")
        camera, rotation = self.camera(cam_prim)
        if sum(len(t.pos) for t in tris) == 0:
            raise InputError(self.path, "geometry", "no renderable geometry (no non-degenerate triangles of a visible gprim)")
        graph, env, categories, predicates = self.layer_metadata()
        categories = _with_missing_labels(categories, self.inst_labels)
        cat_index = {c: i + 1 for i, c in enumerate(categories)}
        obj_ids = [i if sid is None else sid for i, sid in enumerate(self.inst_ids)]
        arrays = dict(
            tri_pos=_f32(np.concatenate([t.pos for t in tris]), (-1, 3, 3)),
            tri_normal=_f32(np.concatenate([t.normal for t in tris]), (-1, 3, 3)),
            tri_uv=_f32(np.concatenate([t.uv for t in tris]), (-1, 3, 2)),
            tri_material=np.concatenate([np.full(len(t.pos), t.material) for t in tris]).astype(np.int32),
            tri_instance=np.concatenate([np.full(len(t.pos), t.instance) for t in tris]).astype(np.int32),
            **self.materials.arrays(),
            **_light_arrays(lights, rotation[2]),
            inst_category_id=np.asarray([cat_index[l] for l in self.inst_labels], dtype=np.int32),
            inst_object_id=np.asarray(obj_ids, dtype=np.int64),
        )
        if not np.isfinite(arrays["tri_pos"]).all():
            raise InputError(self.path, "points", "NaN or infinite world coordinates (check the transforms)")
        for a in arrays.values():
            a.setflags(write=False)
        textures, index = self.materials.textures, self.materials.texture_index
        for t in textures:
            t.setflags(write=False)
        return SceneData(**arrays, textures=tuple(textures), texture_keys=tuple(sorted(index, key=index.get)),
                         camera=camera, inst_path=tuple(self.inst_paths), inst_label=tuple(self.inst_labels),
                         categories=categories, predicates=predicates, graph=graph, env=env,
                         source=str(self.path), skipped=tuple(self.skipped))

    def layer_metadata(self) -> tuple:
        """(graph or None, env name or None, categories tuple (may be empty), predicates tuple) from
        the root layer's `customLayerData["sim2sg"]`, which our compiler writes; foreign stages
        have none."""
        meta = self.stage.GetRootLayer().customLayerData.get("sim2sg")
        if meta is None:
            return None, None, (), ()
        from sim2sg.scene import graph as graphlib
        categories = tuple(str(c) for c in meta.get("categories", ()))
        predicates = tuple(str(p) for p in meta.get("predicates", ()))
        env = meta.get("env")
        graph = None
        if meta.get("graph"):
            graph = graphlib.from_json(str(meta["graph"]), source=f"{self.path}:customLayerData.sim2sg.graph")
        return graph, env, categories, predicates

    def camera(self, prim) -> tuple[Camera, np.ndarray]:
        """The `Camera` of a UsdGeom.Camera prim at the output size, and its (3, 3) float64
        world-to-camera rotation (rows: right, down, forward; USD cameras look down local -Z with
        +Y up). The Camera is upright (orientation None) when that reproduces the rotation to
        1e-9, else it carries the rotation (a rolled camera renders exactly)."""
        cam = UsdGeom.Camera(prim)
        g = lambda a, d: (lambda v: d if v is None else float(v))(a.Get())
        m = self.world(prim)
        eye = self.to_world_points(m, np.zeros((1, 3)))[0].astype(np.float64)
        axes = (np.eye(3) @ m[:3, :3]) @ self.rot.T  # local x, y, z axes in world (rows)
        n = np.linalg.norm(axes, axis=1)
        if not (np.isfinite(eye).all() and np.isfinite(n).all() and n.min() > 1e-12 * n.max()):
            raise InputError(self.path, str(prim.GetPath()), "camera transform is degenerate (a zero scale) or not finite")
        rotation = (axes / n[:, None] * np.array([[1.0], [-1.0], [-1.0]])).astype(np.float64)  # right, down, fwd
        rng = cam.GetClippingRangeAttr().Get() or Gf.Vec2f(1.0, 1e6)
        if not 0 < rng[0] < rng[1] < math.inf:
            raise InputError(self.path, f"{prim.GetPath()}.clippingRange", f"need 0 < near < far, got {tuple(rng)}")
        h_ap, v_ap = g(cam.GetHorizontalApertureAttr(), 20.955), g(cam.GetVerticalApertureAttr(), 15.2908)
        focal = g(cam.GetFocalLengthAttr(), 50.0)
        if not (h_ap > 0 and v_ap > 0 and focal > 0):
            raise InputError(self.path, f"{prim.GetPath()}.focalLength", "focal length and apertures must be > 0")
        if cam.GetProjectionAttr().Get() == UsdGeom.Tokens.orthographic:
            raise InputError(self.path, f"{prim.GetPath()}.projection", "orthographic cameras are not supported")
        h_off = g(cam.GetHorizontalApertureOffsetAttr(), 0.0)
        v_off = g(cam.GetVerticalApertureOffsetAttr(), 0.0)
        w, h = self.width, self.height
        # the lens is size-independent (only ratios matter); the image aspect comes from the apertures
        fx = focal / h_ap * w
        fy = focal / v_ap * h
        cx = w / 2.0 - h_off * w / h_ap
        cy = h / 2.0 + v_off * h / v_ap
        look = eye + rotation[2]
        camera = Camera(w, h, float(fx), float(fy), float(cx), float(cy), tuple(float(v) for v in eye),
                        tuple(float(v) for v in look), float(rng[0]) * self.mpu, float(rng[1]) * self.mpu)
        if np.abs(camera.rotation() - rotation).max() > 1e-9:
            camera = dataclasses.replace(camera, orientation=tuple(float(v) for v in rotation.ravel()))
        return camera, rotation


def usd_error(e: Exception) -> str:
    """USD's own reason from a `pxr.Tf.ErrorException` (its first quoted message), for one line."""
    found = re.findall(r": '(.*)'\s*$", str(e), flags=re.M)
    return found[0] if found else (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_sublayers(layer, source, _seen: set | None = None) -> None:
    """Every sublayer of `layer` (recursively) opens; else an `InputError(source, "subLayers", ...)`
    (USD itself only warns and renders the stage without it)."""
    seen = _seen if _seen is not None else set()
    if layer.identifier in seen:
        return
    seen.add(layer.identifier)
    for sub_path in layer.subLayerPaths:
        try:
            sub = Sdf.Layer.FindOrOpen(layer.ComputeAbsolutePath(sub_path))
        except Exception as e:
            raise InputError(source, "subLayers", f"sublayer {sub_path} cannot be opened: {usd_error(e)}") from None
        if sub is None:
            raise InputError(source, "subLayers", f"sublayer not found: {sub_path}")
        check_sublayers(sub, source, seen)


def load_scene(path: "str | Path | Usd.Stage", width: int, height: int, camera: str | None = None) -> SceneData:
    """Read the USD stage at `path` (any valid stage; see the module docstring) into a `SceneData`
    whose `camera` renders `width` x `height` pixels.

    path: a stage file, or an open (e.g. in-memory) `Usd.Stage`, whose texture paths must then
    resolve on their own (absolute).
    camera: name or path of the UsdGeom.Camera to use; None = the first in traversal order.
    Raises `InputError(path, field, message)` for unreadable stages, no camera, no geometry, missing
    texture files and NaN points.
    """
    if isinstance(path, Usd.Stage):
        return _Reader(Path(path.GetRootLayer().identifier), width, height, camera, stage=path).read()
    path = Path(path)
    if not path.exists():
        raise InputError(path, "", "file not found")
    return _Reader(path, width, height, camera).read()
