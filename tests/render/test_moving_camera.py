"""A moving camera (follow + handheld + zoom) on a real render: the stored per-frame cameras mean what the
pinhole model says they mean, for joints2D, depth, flow (body and background) and normals.

The statements come from outside the farm's code: the pinhole projection K_t (R_t X + T_t) / z of the stored
camK/camR/camT, the SMPL body rebuilt with smplx from the stored pose, zrot and joints3D as SURREAL's readers do
(tests/surreal_relations.py), exact ray-triangle hits, and a direction at infinity for the background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import surreal_relations as sr
from walk_clip import NAME as CLIP
from walk_clip import render_walk

W, H = 320, 240
FRAMES = 10
# Stronger than the sampler draws, so that a few frames show every part of the motion clearly.
MOTION = dict(mode="follow+handheld+zoom", lag_s=0.2, shake_deg=1.5, shake_hz=2.5, shake_seed=7, zoom=3.5)


@pytest.fixture(scope="module")
def moving(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    return render_moving(tmp_path_factory.mktemp("moving"), "surreal", FRAMES)


@pytest.fixture(scope="module")
def moving_clean(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    return render_moving(tmp_path_factory.mktemp("moving-clean"), "clean", 4)


def render_moving(root: Path, convention: str, frames: int) -> dict[str, dict[str, np.ndarray]]:
    """The built-in walking clip's first `frames` frames with MOTION's camera, read back from its files."""
    update = f'{{"camera_motion": CameraMotion(**{MOTION!r}), "convention": {convention!r}}}'
    out = render_walk(
        root,
        frames,
        {"out": update},
        setup="from farm.core.spec import CameraMotion",
        renderer="ParallelRenderer",
    )["out"]
    folder = out / "builtin/train/run0/walk_s01_01"
    files = {"info": scipy.io.loadmat(folder / f"{CLIP}_info.mat")}
    for prefix in ("depth", "segm", "gtflow", "normal"):
        mat = scipy.io.loadmat(folder / f"{CLIP}_{prefix}.mat")
        files[prefix] = {"all": np.stack([mat[f"{prefix}_{t}"] for t in range(1, frames + 1)])}
    return files


def cameras(info: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K (T, 3, 3), R (T, 3, 3), T (T, 3)) as stored: camK, camR 3x3xT, camT 3xT."""
    K = np.asarray(info["camK"], np.float64).transpose(2, 0, 1)
    R = np.asarray(info["camR"], np.float64).transpose(2, 0, 1)
    return K, R, np.asarray(info["camT"], np.float64).T


def rays(K: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(H, W, 3) world directions through each pixel centre (c + 0.5: the surreal convention's pixels)."""
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], -1)
    return pix @ np.linalg.inv(K).T @ R  # R^T (K^-1 p), row by row


def project(K: np.ndarray, R: np.ndarray, t: np.ndarray, X: np.ndarray) -> np.ndarray:
    x = (X @ R.T + t) @ K.T
    return x[..., :2] / x[..., 2:]


@pytest.mark.blender
def test_frame_zero_is_surreals_camera_and_the_camera_moves(moving):
    info = moving["info"]
    K, R, t = cameras(info)
    assert K.shape == (FRAMES, 3, 3) and info["camT"].shape == (3, FRAMES)
    assert np.allclose(K[0], sr.K) and np.allclose(R[0], sr.R_WORLD2CV, atol=1e-6)
    assert np.allclose(t[0], -sr.R_WORLD2CV @ sr.cam_loc(info), atol=1e-5)
    centres = -np.einsum("tji,tj->ti", R, t)  # the camera turns about camLoc
    assert np.allclose(centres, sr.cam_loc(info), atol=1e-4)
    turned = np.degrees(np.arccos(np.clip((np.trace(R[0].T @ R[-1]) - 1) / 2, -1, 1)))
    assert turned > 0.5 and K[-1, 0, 0] > K[0, 0, 0] * 1.005  # it turns and zooms in
    assert (np.linalg.det(R) < 0).all()  # still SURREAL's mirrored frames


@pytest.mark.blender
def test_joints2d_reproject_from_each_frames_camera(moving):
    info = moving["info"]
    K, R, t = cameras(info)
    j3 = sr.joints3d(info)
    mine = np.stack([project(K[i], R[i], t[i], j3[i]) for i in range(FRAMES)])
    assert np.array_equal(np.round(mine), sr.stored_joints2d(info))  # whole pixels, exactly
    fixed = np.round(sr.project(info))  # a reader assuming a fixed camera: right on frame 0 only
    assert np.array_equal(fixed[0], sr.stored_joints2d(info)[0]) and not np.array_equal(
        fixed[-1], sr.stored_joints2d(info)[-1]
    )


def body_hits(info, vertices, faces, K, R, frame, pixels):
    """(distance along the ray, hit face, barycentrics (N, 3)) of each (row, col) pixel's ray on the body."""
    origin = sr.cam_loc(info)
    d = rays(K[frame], R[frame])[pixels[:, 0], pixels[:, 1]]
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    v = vertices[frame]
    a, b, c = (v[faces[:, i]] for i in range(3))
    e1, e2 = b - a, c - a
    out = []
    for direction in d:
        p = np.cross(direction, e2)
        det = np.einsum("ij,ij->i", e1, p)
        inv = 1.0 / np.where(np.abs(det) > 1e-12, det, np.inf)
        s = origin - a
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        w = (q @ direction) * inv
        dist = np.einsum("ij,ij->i", e2, q) * inv
        hit = (u >= 0) & (w >= 0) & (u + w <= 1) & (dist > 0)
        f = np.flatnonzero(hit)[np.argmin(dist[hit])]
        out.append((dist[f], f, np.array([1 - u[f] - w[f], u[f], w[f]])))
    return out


@pytest.mark.blender
def test_depth_flow_and_normals_follow_each_frames_camera(moving, smpl_models):
    info = moving["info"]
    K, R, t = cameras(info)
    gender = "male" if int(info["gender"][0, 0]) == 1 else "female"
    vertices, _ = sr.smpl_from_info(smpl_models[gender], info)
    faces = np.asarray(smpl_models[gender].faces, np.int64)
    depth, segm = moving["depth"]["all"], moving["segm"]["all"]
    flow, normal = moving["gtflow"]["all"], moving["normal"]["all"]
    rng = np.random.default_rng(0)
    depth_errors, body_flow_errors, body_motion, bg_errors = [], [], [], []
    assert not flow[0].any()  # frame 1 has no predecessor
    for frame in (1, FRAMES // 2, FRAMES - 1):
        fg = segm[frame] > 0
        inner = fg & np.roll(fg, 1, 0) & np.roll(fg, -1, 0) & np.roll(fg, 1, 1) & np.roll(fg, -1, 1)
        pixels = np.argwhere(inner)[rng.choice(inner.sum(), 40, replace=False)]
        for (row, col), (dist, f, bary) in zip(
            pixels, body_hits(info, vertices, faces, K, R, frame, pixels), strict=True
        ):
            depth_errors.append(abs(depth[frame, row, col] - dist))
            # The same surface point one frame earlier, seen by that frame's camera: SURREAL's raw flow is
            # (x_prev - x, y - y_prev).
            before = bary @ vertices[frame - 1][faces[f]]
            x_prev, y_prev = project(K[frame - 1], R[frame - 1], t[frame - 1], before)
            expected = np.array([x_prev - (col + 0.5), (row + 0.5) - y_prev])
            body_flow_errors.append(np.linalg.norm(flow[frame, row, col] - expected))
            body_motion.append(np.linalg.norm(expected))
        # The background: a direction at infinity, seen one frame earlier.
        bg = np.argwhere(~fg)[rng.choice((~fg).sum(), 500, replace=False)]
        d = rays(K[frame], R[frame])[bg[:, 0], bg[:, 1]]
        x = d @ R[frame - 1].T @ K[frame - 1].T
        prev = x[:, :2] / x[:, 2:]
        expected = np.stack([prev[:, 0] - (bg[:, 1] + 0.5), (bg[:, 0] + 0.5) - prev[:, 1]], -1)
        bg_errors.append(np.abs(flow[frame][bg[:, 0], bg[:, 1]] - expected).max())
        assert bg_errors[-1] < 0.1  # pixels
        assert np.abs(expected).max() > 1.0  # the background does move
        # Normals (world frame, as SURREAL's) face this frame's camera.
        r = rays(K[frame], R[frame])[fg]
        facing = np.einsum("ij,ij->i", normal[frame][fg], r) / np.linalg.norm(r, axis=1)
        assert (facing < 0).mean() > 0.95
    assert np.median(depth_errors) < 2e-3 and np.quantile(depth_errors, 0.95) < 2e-3  # metres
    # The body's flow: Blender's Vector pass of the posed mesh against the smplx rebuild (float32 vertices,
    # joints within 1 mm of the stored ones): within 0.1 px at 95 % of the sampled pixels, 0.25 px at all.
    print(
        f"moving camera: depth error median {np.median(depth_errors) * 1e3:.3f} mm, max {max(depth_errors) * 1e3:.3f} "
        f"mm; body flow error median {np.median(body_flow_errors):.4f} px, max {max(body_flow_errors):.4f} px "
        f"(motion median {np.median(body_motion):.2f} px); background flow error max {max(bg_errors):.4f} px"
    )
    assert np.median(body_motion) > 1.0
    assert np.quantile(body_flow_errors, 0.95) < 0.1 and max(body_flow_errors) < 0.25, body_flow_errors


@pytest.mark.blender
def test_the_clean_convention_moves_the_same_way(moving_clean):
    """Clean: unrounded joints2D (pixel c centred at c), forward flow (0 on the last frame), camera-frame normals."""
    info = moving_clean["info"]
    K, R, t = cameras(info)
    T = len(K)
    j3 = sr.joints3d(info)
    mine = np.stack([project(K[i], R[i], t[i], j3[i]) for i in range(T)])
    assert np.abs(mine - sr.stored_joints2d(info)).max() < 1e-3
    assert not np.allclose(R[0], R[-1]) and np.linalg.det(R).min() > 0  # it turns; no mirror
    segm, flow, normal = (
        moving_clean["segm"]["all"],
        moving_clean["gtflow"]["all"],
        moving_clean["normal"]["all"],
    )
    assert not flow[-1].any()
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(u)], -1)
    for frame in range(T - 1):
        bg = segm[frame] == 0
        d = pix[bg] @ np.linalg.inv(K[frame]).T @ R[frame]  # world directions of the background's pixels
        x = d @ R[frame + 1].T @ K[frame + 1].T
        expected = x[:, :2] / x[:, 2:] - pix[bg][:, :2]
        assert np.abs(flow[frame][bg] - expected).max() < 0.1
        assert (normal[frame][segm[frame] > 0][:, 2] < 0).mean() > 0.95  # facing this frame's camera
