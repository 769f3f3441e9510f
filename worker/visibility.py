"""Per-joint visibility and per-person boxes, judged against the rendered frames (`_info.mat`'s `visible`, `bbox`).

A joint is visible in a frame when it projects into the image, the pixel under it shows its own person (the
`inst` pass), and the surface there lies less than `SELF_OCCLUSION_M` in front of the joint in the stored
depth's terms (a joint sits inside its limb, so its own limb's surface is a few centimetres in front of it; a
nearer surface is another limb or another person in front of it).

A person's box is the tight box of their visible pixels, (x_min, y_min, x_max, y_max) as pixel edges in the
coordinates of `joints2D` (pixel c spans c - 0.5 + o .. c + 0.5 + o with o the camera's pixel centre: 0.5 in
the surreal convention, 0 in clean), NaN in frames where none of them shows. A visible joint lies in its box.
"""

from __future__ import annotations

import numpy as np

from farm.render.camera import Camera

SELF_OCCLUSION_M = 0.2


def pixel_of(camera: Camera, uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates of K (..., 2) -> the integer (col, row) of the pixel holding them."""
    return np.floor(np.asarray(uv, np.float64) - camera.pixel_centre + 0.5).astype(np.int64)


def joint_depth(camera: Camera, points: np.ndarray, convention: str) -> np.ndarray:
    """World points (..., T, J, 3) -> their depth in frame t as the stored depth measures it: along the ray (surreal) or the
    camera's z (clean)."""
    cam = camera.to_camera_frames(np.asarray(points, np.float64))
    return np.linalg.norm(cam, axis=-1) if convention == "surreal" else cam[..., 2]


def visible_joints(
    camera: Camera, convention: str, joints3d: np.ndarray, depth: np.ndarray, inst: np.ndarray
) -> np.ndarray:
    """`joints3d` (P, T, 24, 3) world metres; `depth`, `inst` (T, H, W) as stored -> (P, 24, T) bool."""
    joints3d = np.asarray(joints3d, np.float64)
    P, T, J, _ = joints3d.shape
    H, W = inst.shape[1:]
    in_front = camera.to_camera_frames(joints3d)[..., 2] > 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        col, row = np.moveaxis(pixel_of(camera, camera.project_frames(joints3d)), -1, 0)
    inside = in_front & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    c, r = np.where(inside, col, 0), np.where(inside, row, 0)
    t = np.broadcast_to(np.arange(T)[None, :, None], (P, T, J))
    person = np.broadcast_to(np.arange(1, P + 1)[:, None, None], (P, T, J))
    own = inst[t, r, c] == person
    unhidden = (
        depth[t, r, c].astype(np.float64) >= joint_depth(camera, joints3d, convention) - SELF_OCCLUSION_M
    )
    return np.ascontiguousarray((inside & own & unhidden).transpose(0, 2, 1))


def person_boxes(camera: Camera, inst: np.ndarray, people: int) -> np.ndarray:
    """`inst` (T, H, W) -> (P, 4, T) float32 boxes of each person's visible pixels (see the module docstring)."""
    T = len(inst)
    boxes = np.full((people, 4, T), np.nan, np.float32)
    edge = camera.pixel_centre - 0.5
    for t in range(T):
        frame = inst[t]
        rows_any = [np.flatnonzero((frame == k + 1).any(axis=1)) for k in range(people)]
        for k, rows in enumerate(rows_any):
            if not len(rows):
                continue
            cols = np.flatnonzero((frame[rows[0] : rows[-1] + 1] == k + 1).any(axis=0))
            boxes[k, :, t] = (cols[0] + edge, rows[0] + edge, cols[-1] + 1 + edge, rows[-1] + 1 + edge)
    return boxes
