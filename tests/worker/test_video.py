"""The mp4 reader (worker/video.py): the spec's size and frame count or a refusal in one sentence naming the
file; only H.264 in an mp4, whatever the file is named; decoding stops past the expected frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.clip_files import BadClipFile
from worker.video import read_mp4, write_mp4

T, H, W = 4, 240, 320


def frames(n: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def refused(path: Path, *args: int) -> str:
    with pytest.raises(BadClipFile) as caught:
        read_mp4(path, *args)
    message = str(caught.value)
    assert message.startswith(f"{path} ") and "\n" not in message and "Traceback" not in message, message
    return message


def test_a_clip_of_the_specs_size_reads_back(tmp_path):
    write_mp4(tmp_path / "good.mp4", frames(T), 30)
    assert read_mp4(tmp_path / "good.mp4", W, H, T).shape == (T, H, W, 3)
    assert read_mp4(tmp_path / "good.mp4", W, H).shape == (T, H, W, 3)  # any count up to a clip's length


def test_an_oversized_mp4_is_refused_not_reshaped(tmp_path):
    """640x480 read as 320x240 came back as 16 frames of garbage."""
    path = tmp_path / "large.mp4"
    write_mp4(path, frames(T, 480, 640), 30)
    assert refused(path, W, H, T) == f"{path} is 640x480, not the 320x240 its spec says"


def test_more_frames_than_the_spec_are_refused(tmp_path):
    path = tmp_path / "long.mp4"
    write_mp4(path, frames(3 * T, 16, 16), 30)
    assert refused(path, 16, 16, T) == f"{path} holds more than the 4 frames its spec says"
    assert refused(path, 16, 16, 5 * T) == f"{path} holds 12 frames, not the 20 its spec says"


def test_a_mislabelled_file_is_refused_by_its_content(tmp_path):
    png = tmp_path / "image.mp4"  # a 320x240 PNG, which ffmpeg would decode as a one-frame video
    Image.fromarray(frames(1)[0]).save(png, format="PNG")
    assert "is not a readable mp4 (" in refused(png, W, H)
    playlist = tmp_path / "playlist.mp4"  # an HLS playlist naming a local file
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile://{png}\n#EXT-X-ENDLIST\n")
    assert "is not a readable mp4 (" in refused(playlist, W, H)
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 3)
    assert "is not a readable mp4 (" in refused(text, W, H)


def test_another_codec_in_an_mp4_is_refused(tmp_path):
    import subprocess

    import imageio_ffmpeg

    path = tmp_path / "mpeg4.mp4"
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
    ]
    subprocess.run([*cmd, "-frames:v", "4", "-c:v", "mpeg4", str(path)], check=True, capture_output=True)
    assert refused(path, W, H, T) == f"{path} holds 'mpeg4' video, not H.264"


def test_a_missing_or_truncated_mp4_is_one_sentence(tmp_path):
    assert refused(tmp_path / "nowhere.mp4", W, H) == f"{tmp_path / 'nowhere.mp4'} is missing"
    path = tmp_path / "cut.mp4"
    write_mp4(path, frames(T), 30)
    path.write_bytes(path.read_bytes()[:2000])
    refused(path, W, H, T)
