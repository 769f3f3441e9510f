"""SURREAL's clip rule: which clips a sequence yields in each run.

Clips are counted in 30 fps frames. For a 120 Hz recording this is exactly the original rule: clip i uses
MoCap frames range(b, e, 4) with b = 4 * i * stride and e = min(b + 400, len(poses)).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from farm.core.spec import CLIP_LENGTH, FPS, RUN_STRIDES


@dataclass(frozen=True)
class PlannedClip:
    run: int
    clip_index: int
    stride: int
    frame_start: int  # 30 fps frames
    frame_count: int


def frames_at_30fps(mocap_frames: int, mocap_rate: float) -> int:
    """How many 30 fps frames the recording holds (time 0, 1/30 s, ... within the recording)."""
    step = mocap_rate / FPS
    return math.floor((mocap_frames - 1) / step + 1e-9) + 1


def iter_clips_in_run(mocap_frames: int, mocap_rate: float, run: int) -> Iterator[PlannedClip]:
    """The run's clips one at a time, so a caller with a limit never builds more of the plan than it takes."""
    stride = RUN_STRIDES[run]
    nb_frames = mocap_frames * FPS / mocap_rate  # a float, as in the original
    count = max(1, math.ceil((nb_frames - (CLIP_LENGTH - stride)) / stride))
    total = frames_at_30fps(mocap_frames, mocap_rate)
    for i in range(count):
        yield PlannedClip(run, i, stride, i * stride, min(CLIP_LENGTH, total - i * stride))


def clips_in_run(mocap_frames: int, mocap_rate: float, run: int) -> list[PlannedClip]:
    return list(iter_clips_in_run(mocap_frames, mocap_rate, run))


def iter_plan(
    mocap_frames: int, mocap_rate: float, runs: tuple[int, ...] = (0, 1, 2)
) -> Iterator[PlannedClip]:
    for run in runs:
        yield from iter_clips_in_run(mocap_frames, mocap_rate, run)


def plan_sequence(
    mocap_frames: int, mocap_rate: float, runs: tuple[int, ...] = (0, 1, 2)
) -> list[PlannedClip]:
    return list(iter_plan(mocap_frames, mocap_rate, runs))
