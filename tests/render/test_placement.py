"""Where a clip's people stand: apart on the shared ground at frame 0, in view of the one camera."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from farm.core.spec import CameraSpec, ClipSpec, MotionRef, Person
from farm.render.prepare import prepare_clip

SEQUENCES = (("walk_s01_01", 1432), ("run_s01_01", 910), ("wave_s01_01", 1285), ("squat_s01_01", 869))


def crowd(convention: str, seed: int) -> ClipSpec:
    """Four people on built-in motions, placed from the seed as the sampler draws them."""
    rng = np.random.default_rng(seed)

    def motion(name: str, frames: int) -> MotionRef:
        return MotionRef(uri=f"builtin:{name}", pose_key="poses", trans_key="trans", rate=120, frames=frames)

    others = tuple(
        Person(
            sequence=name,
            frame_start=int(rng.integers(0, 100)),
            motion=motion(name, frames),
            gender="male",
            shape=tuple(rng.normal(0, 1, 10).round(3)),
            shape_source="test",
            texture="builtin:texture/male/train/0001",
            zrot=float(rng.uniform(0, 2 * np.pi)),
            ground_x=float(rng.uniform(-0.6, 0.6)),
            ground_depth=float(rng.uniform(-1.5, 3.0)),
            gap=float(rng.uniform(0.1, 0.5)),
        )  # fmt: skip
        for name, frames in SEQUENCES[1:]
    )
    return ClipSpec(
        name="walk_s01_01_c0001", catalog="builtin", sequence="walk_s01_01", split="train", run=0, clip_index=0,
        stride=50, frame_start=0, frame_count=100, motion=motion(*SEQUENCES[0]), seed=seed, body_model="free",
        gender="female", shape=(0.0,) * 10, shape_source="test", texture="builtin:texture/female/train/0001",
        background="builtin:background/train/0001", light=(0.5,) + (0.0,) * 8,
        camera=CameraSpec(distance=float(rng.normal(8, 1))), zrot=float(rng.uniform(0, 2 * np.pi)),
        convention=convention, others=others,
    )  # fmt: skip


@pytest.mark.parametrize("convention", ["surreal", "clean"])
def test_frame0_footprints_are_apart_and_everyone_is_in_view(convention):
    for seed in range(3):
        spec = crowd(convention, seed)
        clip = prepare_clip(spec, frames=2)
        cam = clip.job.camera
        up = -cam.R[1]  # the camera is level: its up is the world's
        seen_from_above = []
        for body in clip.job.bodies():
            world = body.vertices[0] @ body.world_from_body[:3, :3].T + body.world_from_body[:3, 3]
            flat = world - np.outer(world @ up, up)  # onto the ground plane
            seen_from_above.append(cKDTree(flat[::4]))
        for k, person in enumerate(spec.people[1:], start=1):
            for j in range(k):
                nearest, _ = seen_from_above[k].query(seen_from_above[j].data)
                assert nearest.min() >= person.gap - 0.02, (seed, k, j)  # 1/4 of the vertices: a little slack
        for person in clip.people():
            u, v = cam.project(person.joints[0, 0])
            assert 0 <= u < cam.width and 0 <= v < cam.height and cam.to_camera(person.joints[0, 0])[2] > 1.0
        heights = [person.joints[0, 0] @ up for person in clip.people()]
        assert np.ptp(heights) < 0.5  # pelvises at standing heights above the same ground
