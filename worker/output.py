"""Write one rendered clip in the SURREAL dataset format.

`<root>/<catalog>/<split>/run<R>/<sequence>/` receives, for the clip `<sequence>_c<NNNN>`: `.mp4` (H.264,
yuv420p, crf 23, the clip's fps), `_info.mat`, `_depth.mat`, `_segm.mat`, `_gtflow.mat`, `_normal.mat`
(MATLAB v5, the keys, shapes and dtypes of the original) and `_manifest.json` (spec, software versions, and
every file with its sha256 and size).

Everything is written into a hidden temporary folder beside the clip first and then renamed into place, the
manifest last: a crash leaves no partial file under a final name, and a clip is complete exactly when its
manifest exists. A rerun replaces a partial earlier attempt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from farm.render import Camera, Progress, Renderer, RenderResult, prepare_clip
from farm.settings import Settings
from farm.spec import ClipSpec

CRF = 23
MAT_ZLIB_LEVEL = 1
SOURCE = "cmu"  # SURREAL's `source` field


@dataclass(frozen=True)
class ClipFiles:
    directory: Path  # the clip's folder (its sequence folder)
    files: list[Path]  # relative to the output root, manifest last
    frames: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cell(values: list[str]) -> np.ndarray:
    """A 1xN MATLAB cell array of strings."""
    cell = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        cell[0, i] = v
    return cell


def info_dict(spec: ClipSpec, poses: np.ndarray, joints3d: np.ndarray, camera: Camera) -> dict[str, Any]:
    """`_info.mat`: poses (T,72) without the yaw; joints3d (T,24,3) in world metres."""
    T = len(poses)
    joints2d = camera.project(np.asarray(joints3d, dtype=np.float64))
    return {
        "sequence": spec.name,
        "clipNo": np.array([[spec.clip_index + 1]], dtype=np.int64),
        "source": SOURCE,
        "stride": np.array([[spec.stride]], dtype=np.int64),
        "bg": _cell([spec.background] * T),
        "cloth": _cell([spec.texture] * T),
        "gender": np.full((T, 1), 0 if spec.gender == "female" else 1, dtype=np.uint8),
        "light": np.repeat(np.asarray(spec.light, np.float32)[:, None], T, axis=1),
        "camDist": np.array([[spec.camera.distance]], dtype=np.float32),
        "camLoc": camera.location.astype(np.float32).reshape(3, 1),
        "zrot": np.full((T, 1), spec.zrot, dtype=np.float32),
        "pose": np.ascontiguousarray(np.asarray(poses, np.float32).T),
        "shape": np.repeat(np.asarray(spec.shape, np.float32)[:, None], T, axis=1),
        "joints2D": np.ascontiguousarray(joints2d.astype(np.float32).transpose(2, 1, 0)),
        "joints3D": np.ascontiguousarray(np.asarray(joints3d, np.float32).transpose(2, 1, 0)),
    }


def write_mp4(path: Path, rgb: np.ndarray, fps: int) -> None:
    """H.264, yuv420p, crf 23 with the ffmpeg binary imageio-ffmpeg ships."""
    import imageio_ffmpeg

    T, H, W, _ = rgb.shape
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", str(fps), "-i", "-",
        "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(CRF), "-pix_fmt", "yuv420p",
        "-threads", "1", "-f", "mp4", str(path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, input=np.ascontiguousarray(rgb, np.uint8).tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"ffmpeg failed writing {path.name}: {proc.stderr.decode(errors='replace')[-500:]}"
        )


def read_mp4(path: Path, width: int, height: int) -> np.ndarray:
    """Decode an mp4 back to (T, H, W, 3) uint8 (tests and contact sheets)."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(path)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


def savemat(path: Path, content: dict[str, Any], level: int = MAT_ZLIB_LEVEL) -> None:
    """scipy.io.savemat, MATLAB v5 with each variable zlib-compressed as scipy does, but at a faster level.

    scipy compresses at zlib's default level 6; level 1 makes these mostly-zero arrays ~3x faster to write
    for files a little larger. The layout is the standard one: a 128-byte header, then one miCOMPRESSED (15)
    element wrapping each miMATRIX element.
    """
    plain = io.BytesIO()
    scipy.io.savemat(plain, content, do_compression=False, format="5")
    raw = plain.getbuffer()
    with open(path, "wb") as f:
        f.write(raw[:128])
        pos = 128
        while pos < len(raw):
            _, size = struct.unpack_from("<II", raw, pos)
            end = pos + 8 + size + (-size % 8)
            packed = zlib.compress(raw[pos:end], level)
            f.write(struct.pack("<II", 15, len(packed)))
            f.write(packed)
            pos = end
    del raw


def _per_frame(prefix: str, frames: np.ndarray) -> dict[str, np.ndarray]:
    return {f"{prefix}_{i + 1}": frames[i] for i in range(len(frames))}


def software_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    import imageio_ffmpeg
    import scipy

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "ffmpeg": imageio_ffmpeg.get_ffmpeg_version(),
    }
    try:
        from importlib.metadata import version

        versions["surreal-farm"] = version("surreal-farm")
    except Exception:  # not installed as a distribution (a bare checkout)
        pass
    versions.update(extra or {})
    return versions


def write_clip(
    root: Path,
    spec: ClipSpec,
    result: RenderResult,
    poses: np.ndarray,
    joints3d: np.ndarray,
    camera: Camera,
    software: dict[str, str] | None = None,
) -> ClipFiles:
    """Write the clip's files under `root` in the SURREAL layout, atomically (see the module docstring)."""
    T = len(result.rgb)
    if len(poses) != T or len(joints3d) != T:
        raise ValueError(f"{T} rendered frames but {len(poses)} poses and {len(joints3d)} joint frames")
    root = Path(root)
    final_dir = root / spec.output_dir
    final_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=final_dir))
    try:
        name = spec.name
        video = ThreadPoolExecutor(max_workers=1)
        mp4 = video.submit(write_mp4, tmp / f"{name}.mp4", result.rgb, spec.fps)
        mats: dict[str, dict[str, Any]] = {
            "info": info_dict(spec, poses, joints3d, camera),
            "depth": _per_frame("depth", result.depth.astype(np.float32, copy=False)),
            "segm": _per_frame("segm", result.segm.astype(np.uint8, copy=False)),
            "gtflow": _per_frame("gtflow", result.flow.astype(np.float32, copy=False)),
            "normal": _per_frame("normal", result.normal.astype(np.float32, copy=False)),
        }
        # The four big files and the video are independent: write them side by side (zlib and ffmpeg
        # release the GIL).
        with ThreadPoolExecutor(max_workers=3) as pool:
            jobs = [
                pool.submit(savemat, tmp / f"{name}_{suffix}.mat", content)
                for suffix, content in mats.items()
            ]
            for j in jobs:
                j.result()
        mp4.result()
        video.shutdown()
        data_files = [f"{name}.mp4"] + [f"{name}_{s}.mat" for s in mats]
        manifest = {
            "clip": name,
            "frames": T,
            "spec": spec.model_dump(mode="json"),
            "software": software_versions(software),
            "files": [
                {"name": f, "sha256": _sha256(tmp / f), "size": (tmp / f).stat().st_size} for f in data_files
            ],
        }
        manifest_name = f"{name}_manifest.json"
        (tmp / manifest_name).write_text(json.dumps(manifest, indent=1) + "\n")
        final_manifest = final_dir / manifest_name
        final_manifest.unlink(missing_ok=True)  # the clip is incomplete until the new manifest lands
        for f in [*data_files, manifest_name]:
            os.replace(tmp / f, final_dir / f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rel = [Path(spec.output_dir) / f for f in [*data_files, manifest_name]]
    return ClipFiles(final_dir, rel, T)


def render_clip_files(
    spec: ClipSpec,
    renderer: Renderer,
    root: Path,
    frames: int | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
    timings: dict[str, float] | None = None,
) -> ClipFiles:
    """The whole clip: motion and body evaluation, render, output files. `timings` receives seconds per stage."""
    import time

    t0 = time.perf_counter()
    clip = prepare_clip(spec, frames=frames, settings=settings)
    t1 = time.perf_counter()
    result = renderer.render(clip.job, progress)
    t2 = time.perf_counter()
    files = write_clip(root, clip.job.spec, result, clip.poses, clip.joints, clip.job.camera, result.software)
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(
            prepare=t1 - t0,
            render=t2 - t1,
            write=t3 - t2,
            **{f"blender_{k}": v for k, v in result.timings.items()},
        )
    return files


Producer = Callable[[ClipSpec, Path], tuple[list[Path], int]]


def blender_files_producer(renderer: Renderer, settings: Settings | None = None) -> Producer:
    """What worker.process needs: (spec, folder) -> (files relative to folder, frame count)."""

    def produce(spec: ClipSpec, folder: Path) -> tuple[list[Path], int]:
        files = render_clip_files(spec, renderer, folder, settings=settings)
        return files.files, files.frames

    return produce
