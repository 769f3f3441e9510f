"""Everything before Blender: motion, body evaluation, assets and camera for one clip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farm.core.settings import Settings
from farm.core.spec import ClipSpec
from farm.render.camera import make_camera
from farm.render.job import RenderJob


def face_labels(vertex_labels: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """A face's part is the label of at least two of its corners, else its first corner's."""
    corner = np.asarray(vertex_labels)[faces]
    return np.where(corner[:, 1] == corner[:, 2], corner[:, 1], corner[:, 0]).astype(np.uint8)


@dataclass
class PreparedClip:
    job: RenderJob
    poses: np.ndarray  # (T, 72) SMPL axis-angle, without the yaw
    joints: np.ndarray  # (T, 24, 3) world metres (with the yaw)


def prepare_clip(spec: ClipSpec, frames: int | None = None, settings: Settings | None = None) -> PreparedClip:
    """Motion, body evaluation, assets and camera for a clip: everything before Blender.

    `frames` renders only the clip's first N frames; the job's spec then says frame_count = N.
    """
    from farm.assets.backgrounds import load_background
    from farm.assets.body import load_body_model
    from farm.assets.motion import load_clip_motion
    from farm.assets.textures import load_texture

    if frames is not None:
        spec = spec.model_copy(update={"frame_count": max(1, min(frames, spec.frame_count))})
    poses, trans = load_clip_motion(spec)
    model = load_body_model(spec.body_model, spec.gender, settings)
    body = model.evaluate(poses, np.asarray(spec.shape, np.float32), trans)
    camera = make_camera(spec, body.joints[0, 0])
    faces = model.faces.astype(np.int32)
    job = RenderJob(
        spec=spec,
        vertices=body.vertices,
        faces=faces,
        vt=model.vt.astype(np.float32),
        ft=model.ft.astype(np.int32),
        face_parts=face_labels(model.part_labels, faces),
        texture=load_texture(spec.texture, settings=settings),
        background=load_background(spec.background, spec.camera.width, spec.camera.height),
        camera=camera,
    )
    return PreparedClip(job, poses, camera.body_to_world(body.joints).astype(np.float32))
