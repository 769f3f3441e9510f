"""Everything before Blender: motion, body evaluation, assets and camera for one clip."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from farm.core.settings import Settings
from farm.core.spec import ClipSpec, Person
from farm.render.camera import apply_rigid, make_camera, with_motion, world_from_body
from farm.render.job import BodyMesh, RenderJob
from farm.render.placement import footprint, place


def face_labels(vertex_labels: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """A face's part is the label of at least two of its corners, else its first corner's."""
    corner = np.asarray(vertex_labels)[faces]
    return np.where(corner[:, 1] == corner[:, 2], corner[:, 1], corner[:, 0]).astype(np.uint8)


@dataclass
class PersonMotion:
    poses: np.ndarray  # (T, 72) SMPL axis-angle, without the yaw
    joints: np.ndarray  # (T, 24, 3) world metres (with the yaw and the placement)


@dataclass
class PreparedClip:
    job: RenderJob
    poses: np.ndarray  # (T, 72) SMPL axis-angle, without the yaw
    joints: np.ndarray  # (T, 24, 3) world metres (with the yaw)
    others: list[PersonMotion] = field(default_factory=list)  # spec.others, in order

    def people(self) -> list[PersonMotion]:
        return [PersonMotion(self.poses, self.joints), *self.others]


def prepare_clip(spec: ClipSpec, frames: int | None = None, settings: Settings | None = None) -> PreparedClip:
    """Motion, body evaluation, assets and camera for a clip: everything before Blender.

    `frames` renders only the clip's first N frames; the job's spec then says frame_count = N.
    """
    from farm.assets.backgrounds import load_background
    from farm.assets.body import load_body_model
    from farm.assets.motion import load_clip_motion
    from farm.assets.textures import load_texture
    from farm.render.camera_motion import background_canvas_size

    if frames is not None:
        spec = spec.model_copy(update={"frame_count": max(1, min(frames, spec.frame_count))})

    def body_of(person: Person) -> tuple[BodyMesh, np.ndarray, np.ndarray]:
        """The person's mesh in body coordinates (world_from_body still to set), poses and joints (T, 24, 3)."""
        poses, trans = load_clip_motion(spec, person)
        model = load_body_model(spec.body_model, person.gender, settings)
        body = model.evaluate(poses, np.asarray(person.shape, np.float32), trans)
        faces = model.faces.astype(np.int32)
        mesh = BodyMesh(
            vertices=body.vertices,
            faces=faces,
            vt=model.vt.astype(np.float32),
            ft=model.ft.astype(np.int32),
            face_parts=face_labels(model.part_labels, faces),
            texture=load_texture(person.texture, settings=settings),
            world_from_body=np.eye(4),
        )
        if spec.correspondence:  # the canonical body: mean shape (betas 0), zero pose, zero translation
            rest = model.evaluate(np.zeros((1, 72), np.float32), np.zeros(10, np.float32), np.zeros((1, 3)))
            mesh.canonical = rest.vertices[0].astype(np.float32)
        return mesh, poses, body.joints

    first, *rest = spec.people
    mesh, poses, joints = body_of(first)
    camera = make_camera(spec, joints[0, 0])
    size = (spec.camera.width, spec.camera.height)
    if spec.camera_motion is not None:  # it sees more of the photo (farm/render/camera_motion.py)
        size = background_canvas_size(*size)
    job = RenderJob(
        spec=spec,
        vertices=mesh.vertices,
        faces=mesh.faces,
        vt=mesh.vt,
        ft=mesh.ft,
        face_parts=mesh.face_parts,
        texture=mesh.texture,
        background=load_background(spec.background, *size),
        camera=camera,
        canonical=mesh.canonical,
    )
    clip = PreparedClip(job, poses, camera.body_to_world(joints).astype(np.float32))
    if spec.camera_motion is not None:
        job.camera = with_motion(camera, spec, clip.joints[:, 0])
    if not rest:
        return clip
    unplaced = []
    for person in rest:
        mesh, poses, joints = body_of(person)
        mesh.world_from_body = world_from_body(spec.convention, person.motion.uri, person.zrot, joints[0, 0])
        unplaced.append((person, mesh, poses, joints))
    first_print = footprint(camera, camera.body_to_world(job.vertices[0]), clip.joints[0, 0])
    shifts = place(
        camera,
        first_print,
        [
            (p, apply_rigid(m.world_from_body, m.vertices[0]), apply_rigid(m.world_from_body, j[0, 0]))
            for p, m, _, j in unplaced
        ],
    )
    for (_, mesh, poses, joints), shift in zip(unplaced, shifts, strict=True):
        mesh.world_from_body[:3, 3] += shift
        job.others.append(mesh)
        clip.others.append(PersonMotion(poses, apply_rigid(mesh.world_from_body, joints).astype(np.float32)))
    return clip
