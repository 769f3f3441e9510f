"""A clip's SMPL motion at 30 fps, from wherever its sequence lives (SURREAL npz, AMASS file, built-in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from farm.assets.untrusted import read_array
from farm.core.errors import FarmError
from farm.core.spec import FPS, ClipSpec, MotionRef, Person

SMPL_BODY_POSE = 66  # joints 0..21; SMPL-H and SMPL-X files share them, and SMPL's two hand joints follow


def load_sequence_motion(motion: MotionRef) -> tuple[np.ndarray, np.ndarray]:
    """The whole recording: poses (T, 72) and translations (T, 3), float32, at the MoCap rate."""
    if motion.uri.startswith("builtin:"):
        from farm.assets.builtin_motions import builtin_motion

        poses, trans = builtin_motion(motion.uri.removeprefix("builtin:"))
    else:
        from farm.core.storage import local_asset

        path = Path(local_asset(motion.uri))
        poses, trans = read_array(path, motion.pose_key), read_array(path, motion.trans_key)
    if poses.ndim != 2 or poses.shape[1] < SMPL_BODY_POSE or trans.shape != (len(poses), 3):
        raise FarmError(
            f"{motion.uri}: {motion.pose_key} {poses.shape} / {motion.trans_key} {trans.shape} are not "
            "(frames, >=66) / (frames, 3); re-import the catalog"
        )
    if poses.shape[1] != 72:  # SMPL-H/X: keep the body, leave SMPL's two hand joints at rest
        poses = np.concatenate([poses[:, :SMPL_BODY_POSE], np.zeros((len(poses), 6), poses.dtype)], axis=1)
    if not (np.isfinite(poses).all() and np.isfinite(trans).all()):
        raise FarmError(
            f"{motion.uri}: {motion.pose_key} holds NaN or infinite values; fix or drop that sequence"
        )
    return poses.astype(np.float32), trans.astype(np.float32)


def resample(poses: np.ndarray, trans: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses and translations at fractional MoCap frame positions: slerp per joint, linear translation."""
    low = np.clip(np.floor(positions).astype(int), 0, len(poses) - 1)
    high = np.minimum(low + 1, len(poses) - 1)
    alpha = (positions - low)[:, None]
    if np.all(alpha == 0):
        return poses[low], trans[low]
    joints = poses.shape[1] // 3
    r_low = Rotation.from_rotvec(poses[low].reshape(-1, 3))
    r_high = Rotation.from_rotvec(poses[high].reshape(-1, 3))
    step = (r_low.inv() * r_high).as_rotvec() * np.repeat(alpha, joints, axis=0)
    rotated = (r_low * Rotation.from_rotvec(step)).as_rotvec().reshape(len(positions), -1)
    return rotated.astype(np.float32), (trans[low] * (1 - alpha) + trans[high] * alpha).astype(np.float32)


def load_clip_motion(spec: ClipSpec, person: Person | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The clip's (or one of its people's) poses (N, 72) and translations (N, 3) at 30 fps; N = spec.frame_count.

    For 120 Hz SURREAL data these are exactly MoCap frames range(b, e, 4) of the original generator.
    """
    motion, start = (spec.motion, spec.frame_start) if person is None else (person.motion, person.frame_start)
    poses, trans = load_sequence_motion(motion)
    positions = (start + np.arange(spec.frame_count)) * (motion.rate / FPS)
    if positions[-1] > len(poses) - 1 + 1e-6:
        raise FarmError(
            f"clip {spec.name} needs MoCap frame {positions[-1]:.0f} but {motion.uri} holds {len(poses)}; "
            "the motion file changed since it was imported, re-import the catalog"
        )
    return resample(poses, trans, positions)
