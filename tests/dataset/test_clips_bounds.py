"""The dataset reads a clip's files through the bounded reader (worker/clip_files.py, worker/video.py): a
manifest's frame count, an mp4 of another size or length and a .mat bomb are refused as a ClipFileError of one
sentence naming the file (clips written by the writer, without Blender)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from farm.dataset.clips import ClipFileError, load_clip, read_manifest
from worker.video import write_mp4

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))
from test_clip_files import mat_bomb  # noqa: E402
from test_qc import spec, write  # noqa: E402

NAME = "01_01_c0001"


@pytest.fixture
def clip(tmp_path) -> Path:
    return write(tmp_path / "clips", spec()).directory


def refused(read, path: Path) -> str:
    with pytest.raises(ClipFileError) as caught:
        read()
    message = str(caught.value)
    assert message.startswith(f"{path} ") and "\n" not in message and "Traceback" not in message, message
    return message


def test_a_manifests_huge_frame_count_is_refused_before_any_item_is_made(clip):
    from farm.dataset import SurrealClips

    path = clip / f"{NAME}_manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "frames": 3_000_000}))
    expected = f"{path} says the clip has 3000000 frames, but its spec allows 1 to 4; it is corrupt, render the clip again"
    assert refused(lambda: read_manifest(clip, NAME), path) == expected
    assert refused(lambda: SurrealClips(clip.parents[3]), path) == expected


def test_an_oversized_or_long_mp4_is_refused(clip):
    path = clip / f"{NAME}.mp4"
    ref = read_manifest(clip, NAME)
    assert load_clip(ref)["rgb"].shape == (4, 240, 320, 3)
    write_mp4(path, np.zeros((4, 480, 640, 3), np.uint8), 30)
    assert "is 640x480, not the 320x240 its spec says" in refused(lambda: load_clip(ref), path)
    write_mp4(path, np.zeros((9, 240, 320, 3), np.uint8), 30)
    assert "holds more than the 4 frames its spec says" in refused(lambda: load_clip(ref), path)
    assert load_clip(ref, with_rgb=False)["depth"].shape == (4, 240, 320)  # the mp4 only when asked for


def test_a_mat_bomb_is_refused(clip):
    bomb = mat_bomb(clip / f"{NAME}_normal.mat", name="normal_2")
    message = refused(lambda: load_clip(read_manifest(clip, NAME), with_rgb=False), bomb)
    assert (
        "declares normal_2 as 20000x20000x1 float32" in message
        and "larger than the 240x320x3 float32" in message
    )
