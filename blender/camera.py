"""The Blender camera object of a farm Camera (farm/render/camera.py): its matrix, and a moving camera's keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import bpy
import numpy as np

from farm.render.camera import Camera

_CV_FROM_BLENDER = np.diag([1.0, -1.0, -1.0])  # Blender camera axes (x right, y up, -z forward) -> OpenCV


def camera_matrix(cam: Camera) -> np.ndarray:
    """Blender's camera object matrix (4, 4) for `cam` (its frame-0 pose for a moving one). A mirrored camera
    (SURREAL's reflection) is rendered as its proper twin; the passes are flipped after."""
    R = np.diag([-1.0, 1.0, 1.0]) @ cam.R if cam.mirrored else cam.R
    m = np.eye(4)
    m[:3, :3] = R.T @ _CV_FROM_BLENDER
    m[:3, 3] = cam.location
    return m


def key_camera(obj: bpy.types.Object, cameras: Sequence[Camera]) -> None:
    """Key `obj` (a camera object, rotation mode QUATERNION) with cameras[i]'s pose and focal length at scene
    frame i + 1. The cameras share one centre; location and scale stay unkeyed and are set exactly after (each
    matrix_world leaves its own decomposition, which differs by rounding), so they are the same however many
    keys a render has."""
    c = cast(bpy.types.Camera, obj.data)
    for i, cam in enumerate(cameras):
        obj.matrix_world = camera_matrix(cam).T.tolist()  # mathutils takes rows
        obj.keyframe_insert("rotation_quaternion", frame=i + 1)
        c.lens = float(cam.K[0, 0]) * c.sensor_width / cam.width
        c.keyframe_insert("lens", frame=i + 1)
    obj.location = cameras[0].location.tolist()
    obj.scale = (1.0, 1.0, 1.0)
