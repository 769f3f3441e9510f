"""The clip's video: one ffmpeg encode command line and one decoder, with the binary imageio-ffmpeg ships."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from farm.core.spec import CLIP_LENGTH
from worker.clip_files import BadClipFile, one_line

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
def decoded(path: Path, max_frames: int | None = None) -> Iterator[tuple[int, int, Iterator[bytes]]]:
    """(width, height, frames) of an mp4 as imageio_ffmpeg.read_frames decodes it: rgb24 bytes per frame,
    never more than `max_frames` of them. Only H.264 in an mp4 is read, whatever the file's name says: the mp4
    demuxer is forced, so ffmpeg refuses an image, a playlist or another container named .mp4 instead of
    opening it as what it is. BadClipFile in one sentence otherwise."""
    import imageio_ffmpeg

    if not Path(path).is_file():
        raise BadClipFile(path, "is missing")
    reader = imageio_ffmpeg.read_frames(
        str(path),
        input_params=["-f", "mp4"],
        output_params=["-frames:v", str(max_frames)] if max_frames else None,
    )
    try:
        try:
            meta = next(reader)
        except (OSError, RuntimeError, StopIteration) as exc:
            raise BadClipFile(path, f"is not a readable mp4 ({one_line(exc)})") from None
        if meta.get("codec") != "h264":
            raise BadClipFile(path, f"holds {meta.get('codec')!r:.40} video, not H.264")
        width, height = (int(v) for v in meta["size"])
        yield width, height, reader
    finally:
        reader.close()


def read_mp4(path: Path, width: int, height: int, frames: int | None = None) -> np.ndarray:
    """Decode an mp4 back to (T, H, W, 3) uint8: it must be width x height and hold `frames` frames (None: 1 up
    to CLIP_LENGTH), or a BadClipFile in one sentence naming it. Decoding stops one frame past that, so a long
    or large file costs no more than the expected one."""
    limit = frames or CLIP_LENGTH
    out: list[np.ndarray] = []
    try:
        with decoded(path, limit + 1) as (w, h, stream):
            if (w, h) != (width, height):  # before a frame is decoded
                raise BadClipFile(path, f"is {w}x{h}, not the {width}x{height} its spec says")
            for frame in stream:
                if len(out) == limit:
                    raise BadClipFile(path, f"holds more than the {limit} frames its spec says")
                out.append(np.frombuffer(frame, np.uint8).reshape(height, width, 3))
    except BadClipFile:
        raise
    except Exception as exc:
        raise BadClipFile(path, f"cannot be decoded ({one_line(exc)})") from None
    if not out:
        raise BadClipFile(path, "holds no frames")
    if frames is not None and len(out) != frames:
        raise BadClipFile(path, f"holds {len(out)} frames, not the {frames} its spec says")
    return np.stack(out)
