"""The built-in motion library: deterministic, well-formed, split by subject, and plausibly human."""

from __future__ import annotations

import hashlib
import re
import zlib

import numpy as np
import pytest

from farm.assets.builtin_motions import (
    BUILTIN_RATE,
    KINDS,
    L_ANKLE,
    L_KNEE,
    R_ANKLE,
    R_KNEE,
    approx_joint_positions,
    builtin_library,
    builtin_motion,
)
from farm.core.errors import FarmError
from farm.core.spec import CLIP_LENGTH, RUN_STRIDES


def first(kind: str, split: str = "train") -> str:
    return next(m.name for m in builtin_library() if m.kind == kind and m.split == split)


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_library_is_deterministic_and_names_are_safe() -> None:
    library = builtin_library()
    assert library == builtin_library()
    names = [m.name for m in library]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", n) for n in names)
    assert {m.kind for m in library} == set(KINDS)


def test_split_is_by_whole_subject() -> None:
    library = builtin_library()
    train = {m.subject for m in library if m.split == "train"}
    test = {m.subject for m in library if m.split == "test"}
    assert train and test and not train & test
    assert 0.15 <= len(test) / (len(train) + len(test)) <= 0.3
    for split in ("train", "test"):
        assert {m.kind for m in library if m.split == split} == set(KINDS)


def test_clip_rule_gives_several_clips_for_long_sequences() -> None:
    frames_30 = [m.frames / 4 for m in builtin_library()]
    stride = RUN_STRIDES[0]
    clips = [max(1, int(np.ceil((n - (CLIP_LENGTH - stride)) / stride))) for n in frames_30]
    assert max(clips) >= 4
    assert sum(clips) > len(clips)


def test_generation_is_deterministic_shapes_and_types() -> None:
    name = first("walk")
    poses, trans = builtin_motion(name)
    frames = next(m.frames for m in builtin_library() if m.name == name)
    assert poses.shape == (frames, 72) and trans.shape == (frames, 3)
    assert poses.dtype == np.float32 and trans.dtype == np.float32
    assert digest(poses, trans) == digest(*builtin_motion(name))


def test_determinism_does_not_depend_on_the_process() -> None:
    # crc32 is the same everywhere; a salted hash() would differ between processes.
    import subprocess
    import sys

    name = first("jump", "test")
    code = (
        "import hashlib, numpy as np; from farm.assets.builtin_motions import builtin_motion; "
        f"p, t = builtin_motion({name!r}); print(hashlib.sha256(p.tobytes() + t.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    poses, trans = builtin_motion(name)
    assert out.strip() == hashlib.sha256(poses.tobytes() + trans.tobytes()).hexdigest()
    assert zlib.crc32(b"walk") == 2375121493  # the seed derivation relies on this being stable


def test_unknown_name_is_a_farm_error() -> None:
    with pytest.raises(FarmError, match="walk_s99_01"):
        builtin_motion("walk_s99_01")


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_plausible(kind: str) -> None:
    poses, trans = builtin_motion(first(kind))
    assert np.isfinite(poses).all() and np.isfinite(trans).all()
    joints = poses.reshape(len(poses), 24, 3).astype(np.float64)
    angles = np.degrees(np.linalg.norm(joints[:, 1:], axis=2))
    assert angles.max() < 175  # no joint twisted through itself
    for knee in (L_KNEE, R_KNEE):
        flexion = np.degrees(joints[:, knee, 0])
        assert flexion.min() > -5 and flexion.max() < 150  # knees bend one way only
    # Smooth: no joint jumps by more than 10 degrees in 1/120 s.
    step = np.degrees(np.abs(np.diff(joints[:, 1:], axis=0))).max()
    assert step < 10
    # The feet stay at or above the ground, which is where they are in the first (standing) frame.
    positions = approx_joint_positions(poses, trans)
    ground = positions[0, [L_ANKLE, R_ANKLE], 1].min()
    assert positions[:, [L_ANKLE, R_ANKLE], 1].min() > ground - 0.05
    assert 0.4 < trans[:, 1].min() and trans[:, 1].max() < 1.6


def test_walking_moves_forward_at_walking_speed() -> None:
    for motion in [m for m in builtin_library() if m.kind == "walk"][:4]:
        poses, trans = builtin_motion(motion.name)
        seconds = len(trans) / BUILTIN_RATE
        path = np.linalg.norm(np.diff(trans[:, [0, 2]], axis=0), axis=1).sum()
        assert 0.8 <= path / seconds <= 2.0, motion.name
        # It walks the way it faces: the root's forward axis (+Z) against the direction of travel.
        from scipy.spatial.transform import Rotation

        forward = Rotation.from_rotvec(poses[:, :3].astype(np.float64)).apply([0.0, 0.0, 1.0])[:, [0, 2]]
        velocity = np.diff(trans[:, [0, 2]], axis=0)
        assert (forward[1:] * velocity).sum() > 0.9 * np.linalg.norm(velocity, axis=1).sum()


def test_running_is_faster_than_walking() -> None:
    def speed(name: str) -> float:
        _, trans = builtin_motion(name)
        return float(np.linalg.norm(trans[-1, [0, 2]] - trans[0, [0, 2]]) / (len(trans) / BUILTIN_RATE))

    assert speed(first("run")) > 1.3 * speed(first("walk"))


def test_knee_bend_moves_the_ankle_backwards() -> None:
    """The convention every motion is built on: +x at the knee bends it like SMPL's."""
    poses = np.zeros((1, 72))
    poses[0, L_KNEE * 3] = np.pi / 2
    bent = approx_joint_positions(poses, np.zeros((1, 3)))[0]
    straight = approx_joint_positions(np.zeros((1, 72)), np.zeros((1, 3)))[0]
    assert bent[L_ANKLE, 2] < straight[L_ANKLE, 2] - 0.3


def test_sketch_skeleton_matches_smplx_kinematics() -> None:
    """approx_joint_positions composes rotations as SMPL does (checked against smplx's own code)."""
    torch = pytest.importorskip("torch")
    from smplx.lbs import batch_rigid_transform, batch_rodrigues

    from farm.assets.builtin_motions import PARENTS, REST_JOINTS

    poses, _ = builtin_motion(first("kick"))
    poses = poses[::97].astype(np.float64)
    rot = batch_rodrigues(torch.from_numpy(poses.reshape(-1, 3))).reshape(len(poses), 24, 3, 3)
    rest = torch.from_numpy(np.repeat(REST_JOINTS[None], len(poses), 0))
    posed, _ = batch_rigid_transform(rot, rest, torch.tensor(PARENTS), dtype=torch.float64)
    ours = approx_joint_positions(poses, np.zeros((len(poses), 3)))
    np.testing.assert_allclose(ours, posed.numpy(), atol=1e-6)
