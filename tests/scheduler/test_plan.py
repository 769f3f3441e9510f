"""SURREAL's clip rule, checked against the reference table (the paper's Table 1)."""

from collections import Counter

import pytest
from surreal_data import cmu_table

from scheduler.plan import clips_in_run, frames_at_30fps, plan_sequence

# From shared/surreal-reference/README.md: clips per split and run, and frames per split.
TABLE1_CLIPS = {
    ("train", 0): 16_563, ("train", 1): 25_754, ("train", 2): 12_684,
    ("test", 0): 3_814, ("test", 1): 5_700, ("test", 2): 3_014,
}  # fmt: skip
TABLE1_FRAMES = {"train": 5_342_090, "test": 1_194_662}


def test_clip_rule_reproduces_table1():
    clips: Counter = Counter()
    frames: Counter = Counter()
    sequences: Counter = Counter()
    for row in cmu_table():
        sequences[row["split"]] += 1
        for run in range(3):
            planned = clips_in_run(int(row["mocap_frames_120hz"]), 120.0, run)
            clips[(row["split"], run)] += len(planned)
            frames[row["split"]] += sum(c.frame_count for c in planned)
    assert dict(sequences) == {"train": 1964, "test": 703}
    assert dict(clips) == TABLE1_CLIPS
    assert dict(frames) == TABLE1_FRAMES
    assert sum(clips.values()) == 67_529 and sum(frames.values()) == 6_536_752


@pytest.mark.parametrize("mocap_frames", [1, 7, 399, 400, 401, 2751, 4346])
def test_each_clip_uses_the_original_mocap_frames(mocap_frames):
    """Clip i uses MoCap frames range(b, e, 4), b = 4 i stride, e = min(b + 400, T)."""
    for run, stride in enumerate((50, 30, 70)):
        for clip in clips_in_run(mocap_frames, 120.0, run):
            b = 4 * clip.clip_index * stride
            e = min(b + 400, mocap_frames)
            assert clip.stride == stride
            assert clip.frame_start * 4 == b
            assert clip.frame_count == len(range(b, e, 4)) > 0


def test_short_sequences_give_one_clip_per_run():
    assert [len(clips_in_run(40, 120.0, run)) for run in range(3)] == [1, 1, 1]
    assert len(plan_sequence(40, 120.0)) == 3
    assert len(plan_sequence(40, 120.0, runs=(1,))) == 1


@pytest.mark.parametrize(
    ("frames", "rate", "expected"),
    [(120, 120.0, 30), (121, 120.0, 31), (100, 100.0, 30), (60, 60.0, 30), (61, 60.0, 31)],
)
def test_other_frame_rates_are_cut_at_30_fps(frames, rate, expected):
    assert frames_at_30fps(frames, rate) == expected
