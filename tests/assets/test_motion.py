"""Loading a clip's motion at 30 fps from SURREAL, AMASS and built-in sequences."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from surreal_data import write_surreal_npz

from farm.assets.motion import load_clip_motion, resample
from farm.core.errors import FarmError
from farm.core.spec import MotionRef
from scheduler.plan import plan_sequence
from scheduler.sampler import (
    GENDERS,
    AppearancePools,
    SequenceRef,
    builtin_backgrounds,
    builtin_shape_bank,
    builtin_textures,
    sample_clip_spec,
)


def spec_for(motion: MotionRef, clip: int = 1, run: int = 0):
    pools = AppearancePools(
        {g: builtin_shape_bank(g) for g in GENDERS},
        {(g, s): builtin_textures(g, s) for g in GENDERS for s in ("train", "test")},
        {s: builtin_backgrounds(s) for s in ("train", "test")},
    )
    planned = [p for p in plan_sequence(motion.frames, motion.rate, (run,)) if p.clip_index == clip][0]
    return sample_clip_spec(SequenceRef("cmu", "01_01", "train", motion), planned, pools, 0, "free")


def test_surreal_clip_takes_every_fourth_mocap_frame(tmp_path):
    rows = [{"sequence": "01_01", "mocap_frames_120hz": "2751"}]
    path = write_surreal_npz(tmp_path / "smpl_data.npz", rows, np.random.default_rng(0))
    data = np.load(path)
    spec = spec_for(
        MotionRef(uri=str(path), pose_key="pose_01_01", trans_key="trans_01_01", rate=120, frames=2751)
    )
    poses, trans = load_clip_motion(spec)
    b = 4 * spec.clip_index * spec.stride
    assert poses.shape == (100, 72) and poses.dtype == np.float32
    np.testing.assert_array_equal(poses, data["pose_01_01"][b : b + 400 : 4])
    np.testing.assert_array_equal(trans, data["trans_01_01"][b : b + 400 : 4])


def test_amass_smplh_at_100_hz_is_resampled_with_slerp(tmp_path):
    frames = 1000
    angle = np.linspace(0, 1.0, frames)  # the left knee bends steadily, 0 to 1 rad
    poses = np.zeros((frames, 156))
    poses[:, 4 * 3] = angle
    np.savez(
        tmp_path / "a.npz",
        poses=poses,
        trans=np.stack([angle, 0 * angle, 0 * angle], 1),
        mocap_framerate=100.0,
    )
    spec = spec_for(
        MotionRef(uri=str(tmp_path / "a.npz"), pose_key="poses", trans_key="trans", rate=100, frames=frames)
    )
    out_poses, out_trans = load_clip_motion(spec)
    times = (spec.frame_start + np.arange(spec.frame_count)) / 30.0
    expected = np.interp(times * 100, np.arange(frames), angle)
    np.testing.assert_allclose(out_poses[:, 12], expected, atol=1e-5)
    np.testing.assert_allclose(out_trans[:, 0], expected, atol=1e-5)
    assert out_poses.shape[1] == 72 and not out_poses[:, 66:].any()


def test_slerp_takes_the_short_way_between_rotations():
    a = Rotation.from_euler("y", 170, degrees=True).as_rotvec()
    b = Rotation.from_euler("y", -170, degrees=True).as_rotvec()
    poses = np.zeros((2, 72), np.float32)
    poses[0, :3], poses[1, :3] = a, b
    mid, _ = resample(poses, np.zeros((2, 3), np.float32), np.array([0.5]))
    # Halfway between +170 and -170 degrees is 180 degrees (20 degrees apart), not 0 (340 degrees apart).
    assert Rotation.from_rotvec(mid[0, :3]).magnitude() == pytest.approx(np.pi, abs=1e-4)


def test_builtin_motion_loads_through_the_same_path():
    from farm.assets.builtin_motions import BUILTIN_RATE, builtin_library

    motion = builtin_library()[0]
    ref = MotionRef(
        uri=f"builtin:{motion.name}",
        pose_key="poses",
        trans_key="trans",
        rate=BUILTIN_RATE,
        frames=motion.frames,
    )
    poses, trans = load_clip_motion(spec_for(ref, clip=0))
    assert poses.shape[1] == 72 and len(poses) == len(trans) > 0 and np.isfinite(poses).all()


def test_a_motion_file_that_shrank_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "a.npz", poses=np.zeros((50, 72)), trans=np.zeros((50, 3)))
    spec = spec_for(
        MotionRef(uri=str(tmp_path / "a.npz"), pose_key="poses", trans_key="trans", rate=120, frames=2751)
    )
    with pytest.raises(FarmError, match="re-import the catalog"):
        load_clip_motion(spec)
