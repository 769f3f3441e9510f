"""A rigid stand-in clip for renderer tests: one cube per SMPL part, moving as one rigid body.

Its motion is known in closed form, so flow, depth and pixel centres can be checked exactly (`check_standin`).
"""

from __future__ import annotations

import numpy as np

from farm.core.spec import CameraSpec, ClipSpec, MotionRef
from farm.render.camera import make_camera
from farm.render.job import BACKGROUND_DEPTH, RenderJob, RenderResult

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


def check_standin(res: RenderResult, job: RenderJob, flow_atol: float, flow_rtol: float = 0.0) -> None:
    """Every foreground pixel of a render of `standin_job` unprojects onto its part's cube, in either
    convention's own terms, and its flow is the closed-form motion within flow_atol + flow_rtol * |flow|."""
    surreal = job.spec.convention == "surreal"
    T = job.frame_count
    cam = job.camera
    assert cam.mirrored == surreal
    inv = np.linalg.inv
    o = cam.pixel_centre
    for t in range(T):
        fg = res.segm[t] > 0
        assert fg.sum() > 500
        assert np.array_equal(fg, res.alpha[t] > 0.5) and np.array_equal(fg, res.depth[t] < BACKGROUND_DEPTH)
        v, u = np.nonzero(fg)
        depth = res.depth[t][fg].astype(np.float64)
        rays = np.stack(
            [(u + o - cam.K[0, 2]) / cam.K[0, 0], (v + o - cam.K[1, 2]) / cam.K[1, 1], np.ones(len(u))], -1
        )
        z = depth / np.linalg.norm(rays, axis=1) if surreal else depth
        x_cam = rays * z[:, None]
        world = (x_cam - cam.t) @ cam.R  # R is orthogonal, a reflection in the surreal convention
        body = (world - cam.world_from_body[:3, 3]) @ cam.world_from_body[:3, :3]
        rest = (body - rigid_pose(t)[:3, 3]) @ rigid_pose(t)[:3, :3]
        # The point lies on its part's cube: depth means what it says and pixel centres agree with K.
        local = rest - JOINTS[res.segm[t][fg] - 1]
        assert np.percentile(np.abs(np.abs(local).max(1) - HALF), 99) < 1e-4
        pixel = np.stack([u, v], -1) + o
        if surreal and t > 0:  # where that surface point was one frame earlier, projected
            prv = cam.world_from_body @ rigid_pose(t - 1) @ inv(rigid_pose(t)) @ inv(cam.world_from_body)
            moved = cam.project(world @ prv[:3, :3].T + prv[:3, 3]) - pixel  # previous - current
            expected = np.stack([moved[:, 0], -moved[:, 1]], -1)  # x_prev - x_cur, y_cur - y_prev
        elif not surreal and t < T - 1:  # where it is one frame later: the forward flow
            nxt = cam.world_from_body @ rigid_pose(t + 1) @ inv(rigid_pose(t)) @ inv(cam.world_from_body)
            expected = cam.project(world @ nxt[:3, :3].T + nxt[:3, 3]) - pixel
        else:  # no predecessor (surreal's first frame) or successor (clean's last): 0 by convention
            expected = np.zeros((len(u), 2))
        assert (np.abs(expected - res.flow[t][fg]) < flow_atol + flow_rtol * np.abs(expected)).all()
        assert not res.flow[t][~fg].any()
        n = res.normal[t][fg].astype(np.float64)
        assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-3)
        # mostly towards the camera (smooth cube normals lean at edges)
        towards = np.einsum("ij,ij->i", n, rays @ cam.R) if surreal else n[:, 2]
        assert towards.mean() < -0.3
    # Every part is seen; SURREAL's camera sees the stand-in from its side, where a few cubes hide others.
    assert np.unique(res.segm).size >= (20 if surreal else 25)
