"""The relations a SURREAL reader relies on, written from ../shared/surreal-reference/README.md ("What the
original's values mean") and the original's own scripts, not from the farm's code. Each takes the arrays of an
`_info.mat` (keys as the original's: joints2D 2x24xT, joints3D 3x24xT, camLoc 3x1, pose 72xT, zrot Tx1, ...),
so the same code runs on the original's sample clip and on the farm's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

# The arrays of the original's sample clip 01_01_c0001_info.mat (a copy of shared/surreal-reference's).
SAMPLE = Path(__file__).resolve().parent / "data/original_sample_01_01_c0001.npz"

# The original's projection (misc/3Dto2D/getExtrinsicBlender.m and its Python port).
R_WORLD2CV = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
K = np.array([[600.0, 0.0, 160.0], [0.0, 600.0, 120.0], [0.0, 0.0, 1.0]])
# SMPL joints: pelvis, left/right hip, neck, head and the two sides' limbs.
PELVIS, L_HIP, R_HIP, NECK, HEAD = 0, 1, 2, 12, 15
LEFT_JOINTS = (1, 4, 7, 10, 13, 16, 18, 20, 22)
RIGHT_JOINTS = (2, 5, 8, 11, 14, 17, 19, 21, 23)
LEFT_LABELS = tuple(j + 1 for j in LEFT_JOINTS)  # leftUpLeg, leftLeg, ... leftHandIndex1
RIGHT_LABELS = tuple(j + 1 for j in RIGHT_JOINTS)
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


def load_sample() -> dict[str, np.ndarray]:
    with np.load(SAMPLE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# SURREACT's layout for several people: these keys gain a leading person axis; the rest are shared.
PERSON_KEYS = ("cloth", "gender", "zrot", "pose", "shape", "joints2D", "joints3D", "visible", "bbox")


def person(info: dict[str, Any], k: int) -> dict[str, Any]:
    """Person k's `_info.mat` of a several-person clip, in the one-person layout the relations read."""
    return {key: (value[k] if key in PERSON_KEYS else value) for key, value in info.items()}


def joints3d(info: dict[str, Any]) -> np.ndarray:
    """(T, 24, 3) world metres."""
    return np.asarray(info["joints3D"], np.float64).transpose(2, 1, 0)


def cam_loc(info: dict[str, Any]) -> np.ndarray:
    return np.asarray(info["camLoc"], np.float64).reshape(3)


def project(info: dict[str, Any]) -> np.ndarray:
    """(T, 24, 2): K (R X + T) / z with T = -R camLoc, before rounding."""
    x = (joints3d(info) @ R_WORLD2CV.T - R_WORLD2CV @ cam_loc(info)) @ K.T
    return x[..., :2] / x[..., 2:]


def stored_joints2d(info: dict[str, Any]) -> np.ndarray:
    return np.asarray(info["joints2D"], np.float64).transpose(2, 1, 0)


def mirror_sign(info: dict[str, Any]) -> np.ndarray:
    """Per frame, +1 if joints2D show the body as a photograph would, -1 if as a mirror image.

    The image orientation of the triangle (left hip, right hip, neck) against its orientation in 3D seen from
    the camera: a proper projection keeps it, a reflection reverses it.
    """
    j2, j3 = stored_joints2d(info), joints3d(info)
    a2, b2 = j2[:, L_HIP] - j2[:, R_HIP], j2[:, NECK] - j2[:, PELVIS]
    cross2 = a2[:, 0] * b2[:, 1] - a2[:, 1] * b2[:, 0]  # image axes: x right, y down
    normal3 = np.cross(j3[:, L_HIP] - j3[:, R_HIP], j3[:, NECK] - j3[:, PELVIS])
    forward = j3[:, PELVIS] - cam_loc(info)  # the camera looks at the body
    return np.sign(cross2) * np.sign(np.einsum("ij,ij->i", normal3, forward))


def rotate_body(zrot: float, pelvis_rotvec: np.ndarray) -> np.ndarray:
    """SURREAL's `rotateBody` (misc/smpl_relations): the SMPL global orientation in the world of joints3D."""
    c, s = np.cos(zrot), np.sin(zrot)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    r90 = Rotation.from_euler("x", np.pi / 2).as_matrix()
    return Rotation.from_matrix(r90 @ rz @ Rotation.from_rotvec(pelvis_rotvec).as_matrix()).as_rotvec()


def smpl_from_info(
    smpl: Any, info: dict[str, Any], betas: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (T, V, 3) and joints (T, 24, 3) of an smplx SMPL model driven as the reference says:
    global_orient = rotateBody(zrot, pose[0:3]), body_pose = pose[3:], betas = shape[:, 0],
    transl = joints3D[:, 0, t] - J_rest[0]."""
    import torch

    pose = np.asarray(info["pose"], np.float64).T
    T = len(pose)
    zrot = float(np.asarray(info["zrot"]).ravel()[0])
    orient = np.stack([rotate_body(zrot, p[:3]) for p in pose])
    b = np.asarray(info["shape"], np.float32)[:, 0] if betas is None else betas
    with torch.no_grad():
        rest = smpl(betas=torch.from_numpy(np.asarray(b, np.float32))[None])
        j_rest0 = rest.joints[0, 0].numpy().astype(np.float64)
        out = smpl(
            betas=torch.from_numpy(np.asarray(b, np.float32))[None].expand(T, -1),
            global_orient=torch.from_numpy(orient.astype(np.float32)),
            body_pose=torch.from_numpy(pose[:, 3:].astype(np.float32)),
            transl=torch.from_numpy((joints3d(info)[:, PELVIS] - j_rest0).astype(np.float32)),
        )
    return out.vertices.numpy().astype(np.float64), out.joints[:, :24].numpy().astype(np.float64)


# Thighs, shins, upper arms and forearms: bones whose direction SMPL and the free body share (the free body's
# pelvis, spine and collar joints sit elsewhere, so those bones are left out).
LIMB_JOINTS = (4, 5, 7, 8, 18, 19, 20, 21)


def limb_cosines(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """(T, 8): cosine between each limb bone (joint minus its parent) of two skeletons (T, 24, 3)."""
    child = np.array(LIMB_JOINTS)
    parent = np.array([SMPL_PARENTS[j] for j in LIMB_JOINTS])
    p = predicted[:, child] - predicted[:, parent]
    a = actual[:, child] - actual[:, parent]
    return np.einsum("tij,tij->ti", p, a) / (np.linalg.norm(p, axis=-1) * np.linalg.norm(a, axis=-1))


def pixel_rays(width: int = 320, height: int = 240) -> np.ndarray:
    """(H, W, 3) world directions of the pixel centres' rays. The original's Blender camera is not shifted,
    so K's principal point lies between the middle pixels and pixel c's centre is at c + 0.5."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    return cam @ R_WORLD2CV  # R^T applied to each row vector


def ray_distances(
    origin: np.ndarray, directions: np.ndarray, vertices: np.ndarray, faces: np.ndarray
) -> np.ndarray:
    """Distance from `origin` along each unit direction (N, 3) to the nearest triangle (Moller-Trumbore);
    inf where a ray misses."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    e1, e2 = b - a, c - a
    out = np.full(len(directions), np.inf)
    for i, d in enumerate(directions):
        p = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = origin - a
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if hit.any():
            out[i] = t[hit].min()
    return out
