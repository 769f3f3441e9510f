"""A rigid stand-in clip for renderer tests: one cube per SMPL part, moving as one rigid body.

Its motion is known in closed form, so flow, depth and pixel centres can be checked exactly.
"""

from __future__ import annotations

import numpy as np

from farm.core.spec import CameraSpec, ClipSpec, MotionRef
from farm.render.camera import make_camera
from farm.render.job import RenderJob

W, H = 320, 240


JOINTS = np.array(
    [[0, 0, 0], [.06, -.09, 0], [-.06, -.09, 0], [0, .11, 0], [.1, -.47, 0], [-.1, -.47, 0], [0, .24, 0],
     [.09, -.87, -.04], [-.09, -.87, -.04], [0, .29, .03], [.12, -.93, .08], [-.12, -.93, .08], [0, .5, 0],
     [.08, .42, 0], [-.08, .42, 0], [0, .6, .02], [.18, .45, 0], [-.18, .45, 0], [.44, .43, 0], [-.44, .43, 0],
     [.7, .44, 0], [-.7, .44, 0], [.78, .44, 0], [-.78, .44, 0]]
)  # fmt: skip
HALF = 0.06


def rigid_pose(t: int) -> np.ndarray:
    """Body -> body-space placement at frame t: a turn about +Y and a walk along +X."""
    a = 0.08 * t
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    m[:3, 3] = [0.02 * t, 0.9, 0.0]
    return m


def standin_job(frames: int = 4, convention: str = "clean") -> RenderJob:
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * HALF
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    verts, faces, parts = [], [], []
    for j, p in enumerate(JOINTS):
        base = 8 * j
        verts.extend(p + corners)
        for a, b, c, d in quads:
            faces += [(base + a, base + b, base + c), (base + a, base + c, base + d)]
            parts += [j + 1, j + 1]
    rest = np.array(verts)
    vt = ((rest[:, :2] - rest[:, :2].min(0)) / np.ptp(rest[:, :2], 0)).astype(np.float32)
    frames_v = np.stack([rest @ rigid_pose(t)[:3, :3].T + rigid_pose(t)[:3, 3] for t in range(frames)])
    yy, xx = np.mgrid[:64, :64]
    texture = np.stack([(xx // 8 + yy // 8) % 2 * 200 + 40, xx * 4, yy * 4], -1).astype(np.uint8)
    spec = ClipSpec(
        name="standin_c0001", catalog="cmu", sequence="standin", split="train", run=0, clip_index=0,
        stride=50, frame_start=0, frame_count=frames,
        motion=MotionRef(uri="builtin:none", pose_key="p", trans_key="t", rate=120, frames=4 * frames),
        seed=0, body_model="free", gender="female", shape=(0.0,) * 10, shape_source="test",
        texture="test:checker", background="test:grey", light=(0.9, -0.5, 0.1, 0.2, 0, 0, 0.1, 0, 0.1),
        camera=CameraSpec(distance=5.0), zrot=0.3, convention=convention,
    )  # fmt: skip
    pelvis0 = rigid_pose(0)[:3, 3]
    return RenderJob(
        spec=spec,
        vertices=frames_v.astype(np.float32),
        faces=np.array(faces, np.int32),
        vt=vt,
        ft=np.array(faces, np.int32),
        face_parts=np.array(parts, np.uint8),
        texture=texture,
        background=np.full((H, W, 3), 90, np.uint8),
        camera=make_camera(spec, pelvis0),
    )
