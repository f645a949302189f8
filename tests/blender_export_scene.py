"""Author a small scene in Blender and export it with Blender's own USD exporter.

Run BY a Python that has `bpy` (see tests/test_blender_import.py), not by pytest:

    .bpy-venv/bin/python tests/blender_export_scene.py OUT.usda {z-m,y-cm}

The scene: a 1 m cube standing at (0.5, 0.3) and a sphere of radius 0.4 m at (-1, 0.8), both
labelled with the legacy Omniverse `Semantics` attributes (Blender custom properties exported
without a namespace), a 20 m ground plane (unlabelled), a sun, and the scene camera at (6, -6, 4)
looking at the origin (50 mm lens on a 36 mm sensor). "z-m": exported as Blender has it (Z up,
meters, translate/rotate/scale ops); "y-cm": Y up and centimetres (Blender adds a root rotation
and scale), each prim's transform as one matrix op.
"""

from __future__ import annotations

import sys

import bpy

out, mode = sys.argv[1], sys.argv[2]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
for name, kind, loc in (("Box", "cube", (0.5, 0.3, 0.5)), ("Ball", "sphere", (-1.0, 0.8, 0.4))):
    if kind == "cube":
        bpy.ops.mesh.primitive_cube_add(size=1.0, location=loc)
    else:
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=loc)
    obj = bpy.context.active_object
    obj.name = name
    obj["semantic:Semantics:params:semanticType"] = "class"
    obj["semantic:Semantics:params:semanticData"] = kind
bpy.ops.mesh.primitive_plane_add(size=20)
bpy.ops.object.camera_add(location=(6, -6, 4))
cam = bpy.context.active_object
cam.rotation_euler = (-cam.location).to_track_quat("-Z", "Y").to_euler()
scene.camera = cam
scene.render.resolution_x, scene.render.resolution_y = 640, 480
bpy.ops.object.light_add(type="SUN", location=(0, 0, 10))
extra = {} if mode == "z-m" else {"convert_orientation": True, "export_global_up_selection": "Y",
                                   "export_global_forward_selection": "NEGATIVE_Z",
                                   "convert_scene_units": "CENTIMETERS", "xform_op_mode": "MAT"}
bpy.ops.wm.usd_export(filepath=out, export_custom_properties=True, custom_properties_namespace="", **extra)
