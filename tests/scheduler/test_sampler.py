"""The per-clip parameter sampler: SURREAL's distributions, determinism, independent named streams."""

import math

import numpy as np
import pytest

from farm.core.spec import ClipSpec, MotionRef
from scheduler.plan import plan_sequence
from scheduler.sampler import (
    GENDERS,
    AppearancePools,
    SequenceRef,
    ShapeBank,
    builtin_backgrounds,
    builtin_shape_bank,
    builtin_textures,
    child_stream,
    clip_seed,
    sample_clip_spec,
)


def pools(textures_per_pool: int | None = None) -> AppearancePools:
    textures = {
        (g, s): builtin_textures(g, s)[:textures_per_pool] for g in GENDERS for s in ("train", "test")
    }
    return AppearancePools(
        {g: builtin_shape_bank(g) for g in GENDERS},
        textures,
        {s: builtin_backgrounds(s) for s in ("train", "test")},
    )


def sequence(name: str = "01_01", split: str = "train") -> SequenceRef:
    motion = MotionRef(
        uri="/data/smpl_data.npz", pose_key=f"pose_{name}", trans_key=f"trans_{name}", rate=120, frames=2751
    )
    return SequenceRef("cmu", name, split, motion)  # type: ignore[arg-type]


def many_specs(split: str = "train", count: int = 3000) -> list[ClipSpec]:
    specs = []
    for i in range(count // 44 + 1):
        seq = sequence(f"{i:02d}_01", split)
        specs += [sample_clip_spec(seq, p, pools(), 0, "free") for p in plan_sequence(2751, 120)]
    return specs[:count]


def test_same_inputs_give_byte_identical_specs():
    planned = plan_sequence(2751, 120)
    first = [sample_clip_spec(sequence(), p, pools(), 0, "free").model_dump_json() for p in planned]
    second = [sample_clip_spec(sequence(), p, pools(), 0, "free").model_dump_json() for p in planned]
    assert first == second
    assert len({ClipSpec.model_validate_json(s).seed for s in first}) == len(planned)
    assert ClipSpec.model_validate_json(first[0]).model_dump_json() == first[0]  # round-trips exactly


def test_seed_depends_on_project_seed_and_clip_identity_only():
    assert clip_seed(0, "cmu", "01_01", 0, 3) == clip_seed(0, "cmu", "01_01", 0, 3)
    others = {
        clip_seed(1, "cmu", "01_01", 0, 3),
        clip_seed(0, "cmu", "01_02", 0, 3),
        clip_seed(0, "cmu", "01_01", 1, 3),
    }
    assert clip_seed(0, "cmu", "01_01", 0, 3) not in others and len(others) == 3
    assert 0 <= clip_seed(0, "cmu", "01_01", 0, 3) < 2**63


def test_named_streams_are_independent_and_stable():
    a, b = child_stream(42, "light").random(4), child_stream(42, "camera").random(4)
    assert not np.allclose(a, b)
    assert np.array_equal(a, child_stream(42, "light").random(4))
    # Changing one pool leaves every other group's draw where it was.
    planned = plan_sequence(2751, 120)[5]
    full, small = (
        sample_clip_spec(sequence(), planned, pools(), 0, "free"),
        sample_clip_spec(sequence(), planned, pools(3), 0, "free"),
    )
    assert (full.light, full.camera, full.zrot, full.shape, full.background) == (
        small.light,
        small.camera,
        small.zrot,
        small.shape,
        small.background,
    )


def test_distributions_match_surreal():
    specs = many_specs()
    females = sum(s.gender == "female" for s in specs) / len(specs)
    assert 0.45 < females < 0.55
    light = np.array([s.light for s in specs])
    assert light[:, 0].min() >= 0.5 and light[:, 0].max() <= 1.4  # ambient 0.5 + 0.9 U
    assert light[:, 1].min() >= -0.7 and light[:, 1].max() <= 0.0  # from above
    assert np.abs(light[:, 2:]).max() <= 0.7 and light[:, 2:].std() == pytest.approx(
        1.4 / math.sqrt(12), rel=0.05
    )
    distance = np.array([s.camera.distance for s in specs])
    assert distance.mean() == pytest.approx(8.0, abs=0.08) and distance.std() == pytest.approx(1.0, abs=0.06)
    zrot = np.array([s.zrot for s in specs])
    assert zrot.min() >= 0 and zrot.max() < 2 * math.pi and zrot.mean() == pytest.approx(math.pi, rel=0.05)
    camera = specs[0].camera
    assert (camera.width, camera.height, camera.focal_mm, camera.sensor_mm, camera.focal_px) == (
        320,
        240,
        60,
        32,
        600,
    )


@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_textures_backgrounds_come_from_the_split(split):
    bank = ShapeBank("bank", np.arange(100 * 10, dtype=float).reshape(100, 10))
    test_pools = AppearancePools({g: bank for g in GENDERS}, pools().textures, pools().backgrounds)
    seq = sequence(split=split)
    specs = [
        sample_clip_spec(seq, p, test_pools, s, "free") for s in range(20) for p in plan_sequence(2751, 120)
    ]
    rows = {int(s.shape_source.split("#")[1]) for s in specs}
    assert rows <= (set(range(80)) if split == "train" else set(range(80, 100)))
    assert len(rows) > 10
    assert all(f"/{split}/" in s.texture and f"/{s.gender}/" in s.texture for s in specs)
    assert all(f"/{split}/" in s.background for s in specs)
    assert all(list(s.shape) == bank.rows[int(s.shape_source.split("#")[1])].tolist() for s in specs)


def test_a_one_person_plan_draws_what_it_drew_before_people_existed():
    planned = plan_sequence(2751, 120)[:20]
    for p in planned:
        one = sample_clip_spec(sequence(), p, pools(), 0, "free")
        assert one == sample_clip_spec(sequence(), p, pools(), 0, "free", people=(1, 1))
        assert "others" not in one.model_dump(mode="json") and not one.others
        several = sample_clip_spec(sequence(), p, pools(), 0, "free", people=(1, 4), partners=[sequence()])
        # the first person, the camera, the light and the background are the one-person clip's
        assert several.model_copy(update={"others": ()}) == one


def test_people_are_drawn_per_clip_from_the_seed_with_their_own_windows():
    partners = [sequence(f"{i:02d}_01") for i in range(5)]
    specs = [
        sample_clip_spec(sequence(), p, pools(), seed, "free", people=(2, 4), partners=partners)
        for seed in range(30)
        for p in plan_sequence(2751, 120)[:3]
    ]
    counts = [len(s.people) for s in specs]
    assert set(counts) == {2, 3, 4}
    for s in specs:
        assert ClipSpec.model_validate_json(s.model_dump_json()) == s  # stored and read back unchanged
        for person in s.others:
            assert person.sequence in {p.name for p in partners}
            assert 0 <= person.frame_start <= 2751 // 4 - s.frame_count
            assert (
                -0.6 <= person.ground_x <= 0.6
                and -1.5 <= person.ground_depth <= 3.0
                and 0.1 <= person.gap <= 0.5
            )
        assert len({(p.sequence, p.frame_start) for p in s.people}) == len(s.people)  # nobody's twin
    again = sample_clip_spec(
        sequence(), plan_sequence(2751, 120)[0], pools(), 0, "free", people=(2, 4), partners=partners
    )
    assert again == specs[0]
