"""The clip's video: one ffmpeg encode command line and one decoder, with the binary imageio-ffmpeg ships."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CRF = 23


def start_encoder(path: Path, width: int, height: int, fps: int) -> subprocess.Popen[bytes]:
    """A running ffmpeg that encodes the raw rgb24 frames written to its stdin into `path`: H.264, yuv420p,
    crf 23, one thread. (imageio_ffmpeg.write_frames gives the same bytes, but checks no exit status, keeps no
    stderr for the error, loses a broken pipe's errno and cannot be killed on abort.)"""
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(CRF), "-pix_fmt", "yuv420p",
        "-threads", "1", "-f", "mp4", str(path),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_encoder(encoder: subprocess.Popen[bytes], path: Path, frames: bytes | None = None) -> None:
    """Send the last `frames`, close the encoder's input and wait for it; RuntimeError if ffmpeg failed."""
    _, err = encoder.communicate(frames)
    if encoder.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {path.name}: {err.decode(errors='replace')[-500:]}")


def stop_encoder(encoder: subprocess.Popen[bytes]) -> None:
    """Kill an encoder that is still running (the clip is abandoned)."""
    if encoder.poll() is None:
        encoder.kill()
        encoder.wait()


def write_mp4(path: Path, rgb: np.ndarray, fps: int) -> None:
    """The frames (T, H, W, 3) as an mp4 (see start_encoder)."""
    T, H, W, _ = rgb.shape
    encoder = start_encoder(path, W, H, fps)
    try:
        finish_encoder(encoder, path, np.ascontiguousarray(rgb, np.uint8).tobytes())
    finally:
        stop_encoder(encoder)


@contextmanager
def decoded(path: Path) -> Iterator[tuple[int, int, Iterator[bytes]]]:
    """(width, height, frames) of an mp4 as imageio_ffmpeg.read_frames decodes it: rgb24 bytes per frame."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
        width, height = (int(v) for v in meta["size"])
        yield width, height, reader
    finally:
        reader.close()


def read_mp4(path: Path, width: int, height: int) -> np.ndarray:
    """Decode an mp4 back to (T, H, W, 3) uint8 (tests and contact sheets)."""
    with decoded(path) as (_, _, frames):
        data = b"".join(frames)
    return np.frombuffer(data, np.uint8).reshape(-1, height, width, 3)
