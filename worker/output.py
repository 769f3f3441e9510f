"""Write one rendered clip in the SURREAL dataset format.

`<root>/<catalog>/<split>/run<R>/<sequence>/` receives, for the clip `<sequence>_c<NNNN>`: `.mp4` (H.264,
yuv420p, crf 23, the clip's fps), `_info.mat`, `_depth.mat`, `_segm.mat`, `_gtflow.mat`, `_normal.mat`
(MATLAB v5, the keys, shapes and dtypes of the original) and `_manifest.json` (spec, software versions, and
every file with its sha256 and size). `_info.mat` adds `visible` (P x 24 x T) and `bbox` (P x 4 x T) to the
original's keys (worker/visibility.py). A clip of several people stores SURREACT's layout instead: the
per-person keys gain a leading person axis, and `_inst.mat` holds each frame's instance mask. A clip whose
spec asks for dense correspondence (`correspondence`) adds `_corr.mat` (`uv_<t>`, `canon_<t>`; CORR_FILE).

Everything is written into a hidden temporary folder beside the clip first and then renamed into place, the
manifest last: a crash leaves no partial file under a final name, and a clip is complete exactly when its
manifest exists. A rerun replaces a partial earlier attempt. Before the renames the clip's arrays and its encoded
mp4 pass the quality gate (worker/qc.py): a clip that fails raises `QualityError` and leaves nothing behind.
"""

from __future__ import annotations

import functools
import io
import json
import os
import platform
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.io
from isal import isal_zlib
from PIL import Image

from farm.core.files import sha256_file
from farm.core.settings import Settings
from farm.core.spec import ClipSpec
from farm.render.camera import Camera, stored_pose
from farm.render.job import Progress, Renderer, RenderResult, motion_blur_manifest
from farm.render.prepare import PersonMotion, prepare_clip
from worker import qc
from worker.video import finish_encoder, start_encoder, stop_encoder
from worker.visibility import person_boxes, visible_joints

if TYPE_CHECKING:
    from worker.process import Producer

MAT_ZLIB_LEVEL = 1
SOURCE = "cmu"  # SURREAL's `source` field


@dataclass(frozen=True)
class ClipFiles:
    directory: Path  # the clip's folder (its sequence folder)
    files: list[Path]  # relative to the output root, manifest last
    frames: int
    qc: dict[str, Any] | None = None  # the quality gate's statistics (worker/qc.py)


def _cell(values: list[str]) -> np.ndarray:
    """A 1xN MATLAB cell array of strings."""
    cell = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        cell[0, i] = v
    return cell


def _index_array(value: int, convention: str) -> np.ndarray:
    """1x1 `clipNo` / `stride`: uint8 as the original's (uint16 past 255, which SURREAL never reached)."""
    if convention == "clean":
        return np.array([[value]], dtype=np.int64)
    return np.array([[value]], dtype=np.uint8 if value <= 255 else np.uint16)


def info_dict(
    spec: ClipSpec, people: list[PersonMotion], camera: Camera, visible: np.ndarray, bbox: np.ndarray
) -> dict[str, Any]:
    """`_info.mat`: each person's poses (T,72) as the motion gives them (without the yaw) and joints (T,24,3) in
    world metres; `visible` (P,24,T) and `bbox` (P,4,T) from worker/visibility.py. What the values mean follows
    spec.convention (farm/render/__init__.py). One person: the original's keys and shapes; several: SURREACT's,
    each per-person key with a leading person axis."""
    T = len(people[0].poses)
    per_person = []
    for person, motion in zip(spec.people, people, strict=True):
        joints2d = camera.project_frames(np.asarray(motion.joints, dtype=np.float64))
        if spec.convention == "surreal":
            joints2d = np.round(joints2d)  # the original stored whole pixels
        per_person.append(
            {
                "cloth": _cell([person.texture] * T),
                "gender": np.full((T, 1), 0 if person.gender == "female" else 1, dtype=np.uint8),
                "zrot": np.full((T, 1), person.zrot, dtype=np.float32),
                "pose": np.ascontiguousarray(stored_pose(spec.convention, person.motion.uri, motion.poses).T),
                "shape": np.repeat(np.asarray(person.shape, np.float32)[:, None], T, axis=1),
                "joints2D": np.ascontiguousarray(joints2d.astype(np.float32).transpose(2, 1, 0)),
                "joints3D": np.ascontiguousarray(np.asarray(motion.joints, np.float32).transpose(2, 1, 0)),
            }
        )
    if len(per_person) == 1:
        person_keys = per_person[0]
    else:
        person_keys = {k: np.stack([p[k] for p in per_person]) for k in per_person[0]}
        person_keys["cloth"] = np.concatenate([p["cloth"] for p in per_person])  # a P x T cell
    shared = {
        "sequence": spec.name,
        "clipNo": _index_array(spec.clip_index + 1, spec.convention),
        "source": SOURCE,
        "stride": _index_array(spec.stride, spec.convention),
        "bg": _cell([spec.background] * T),
        "light": np.repeat(np.asarray(spec.light, np.float32)[:, None], T, axis=1),
        "camDist": np.array([[spec.camera.distance]], dtype=np.float32),
        "camLoc": camera.location.astype(np.float32).reshape(3, 1),
    }
    order = ("sequence", "clipNo", "source", "stride", "bg", "cloth", "gender", "light", "camDist", "camLoc",
             "zrot", "pose", "shape", "joints2D", "joints3D")  # fmt: skip  # the original's key order
    info = {k: {**shared, **person_keys}[k] for k in order}
    info["visible"] = np.ascontiguousarray(visible, dtype=bool)
    info["bbox"] = np.ascontiguousarray(bbox, dtype=np.float32)
    if camera.path is not None:  # a moving camera: every frame's, as joints2D = K_t (R_t X + T_t) / z
        K, R, t = camera.frames(T)
        info["camK"] = np.ascontiguousarray(K.transpose(1, 2, 0), dtype=np.float32)  # 3x3xT
        info["camR"] = np.ascontiguousarray(R.transpose(1, 2, 0), dtype=np.float32)  # 3x3xT
        info["camT"] = np.ascontiguousarray(t.T, dtype=np.float32)  # 3xT
    return info


# MATLAB's 116-byte header text. scipy writes the current time there; a fixed text makes a re-render of a
# clip byte-identical to the first.
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: surreal-farm"


def _mat_header() -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {}, format="5")
    return MAT_HEADER_TEXT.ljust(116, b" ") + buf.getvalue()[116:128]  # then subsystem, version, endianness


def _compressed_elements(content: dict[str, Any], level: int = MAT_ZLIB_LEVEL) -> list[bytes]:
    """Each variable as a MATLAB v5 miCOMPRESSED (15) element wrapping its miMATRIX element: what scipy writes
    with do_compression=True, but deflated by ISA-L at level 1 (a zlib stream any reader inflates): on the
    demo's frames 0.48 ms a frame against zlib's 4.2 ms at level 1 (scipy uses 6), and 11 % smaller."""
    plain = io.BytesIO()
    scipy.io.savemat(plain, content, do_compression=False, format="5")
    raw = plain.getbuffer()
    out = []
    pos = 128
    while pos < len(raw):
        _, size = struct.unpack_from("<II", raw, pos)
        end = pos + 8 + size + (-size % 8)
        packed = isal_zlib.compress(raw[pos:end], level)
        out.append(struct.pack("<II", 15, len(packed)) + packed)
        pos = end
    del raw
    return out


def savemat(path: Path, content: dict[str, Any]) -> None:
    """scipy.io.savemat's MATLAB v5 file with compressed variables (see _compressed_elements)."""
    with open(path, "wb") as f:
        f.write(_mat_header())
        for element in _compressed_elements(content):
            f.write(element)


@functools.cache
def _ffmpeg_version() -> str:
    """Asked once per process: it runs ffmpeg (14 ms, every clip)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_version())


def software_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    import scipy

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "ffmpeg": _ffmpeg_version(),
    }
    try:
        from importlib.metadata import version

        versions["surreal-farm"] = version("surreal-farm")
    except Exception:  # not installed as a distribution (a bare checkout)
        pass
    versions.update(extra or {})
    return versions


PASS_FILES = (("depth", "depth", np.float32), ("segm", "segm", np.uint8), ("gtflow", "flow", np.float32),
              ("normal", "normal", np.float32))  # fmt: skip
# Clips of several people only: a one-person clip's files are SURREAL's.
INST_FILE = ("inst", "inst", np.uint8)
# Clips whose spec asks for dense correspondence only (ClipSpec.correspondence): `_corr.mat` holds per frame t
# `uv_<t>` (H, W, 2) and `canon_<t>` (H, W, 3) float32 (RenderResult.uv, .canon; NaN on background).
CORR_FILE = "corr"


class ClipWriter:
    """Writes one clip's files, encoding frames as they arrive so that the writing overlaps the render.

    `feed(arrays, upto)` encodes frames [done, upto) (video frames go to a running ffmpeg, pass frames are
    compressed into MAT elements); `finish(...)` writes the rest and renames everything into place; `abort()`
    leaves nothing behind. See the module docstring for the atomicity rule.
    """

    def __init__(self, root: Path, spec: ClipSpec) -> None:
        self.spec = spec
        self.final_dir = Path(root) / spec.output_dir
        self.final_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=self.final_dir))
        self.done = 0
        self.passes = PASS_FILES + ((INST_FILE,) if spec.others else ())
        self.elements: dict[str, list[bytes]] = {prefix: [] for prefix, _, _ in self.passes}
        if spec.correspondence:
            self.elements[CORR_FILE] = []
        self._ffmpeg: subprocess.Popen[bytes] | None = None
        # The quality gate sees each frame as it is encoded (while Blender renders the next ones).
        self.gate = qc.Gate(
            spec.frame_count,
            spec.convention,
            (spec.camera.width, spec.camera.height),
            people=len(spec.people),
        )

    def _video(self, height: int, width: int) -> subprocess.Popen[bytes]:
        if self._ffmpeg is None:
            self._ffmpeg = start_encoder(self.tmp / f"{self.spec.name}.mp4", width, height, self.spec.fps)
        return self._ffmpeg

    def feed(self, arrays: Any, upto: int) -> None:
        """Encode frames done..upto-1 of `arrays` (a RenderResult or a mapping of its array names)."""

        def get(name: str) -> np.ndarray:
            return arrays[name] if isinstance(arrays, dict) else getattr(arrays, name)

        rgb = get("rgb")
        video = self._video(rgb.shape[1], rgb.shape[2])
        assert video.stdin is not None
        for i in range(self.done, upto):
            video.stdin.write(np.ascontiguousarray(rgb[i], np.uint8).tobytes())
            written = {}
            for prefix, field, dtype in self.passes:
                frame = np.asarray(get(field)[i], dtype=dtype)
                self.elements[prefix] += _compressed_elements({f"{prefix}_{i + 1}": frame})
                written[field] = frame[None]
            if self.spec.correspondence:
                uv, canon = (np.asarray(get(name)[i], dtype=np.float32) for name in ("uv", "canon"))
                self.elements[CORR_FILE] += _compressed_elements({f"uv_{i + 1}": uv, f"canon_{i + 1}": canon})
                written.update(uv=uv[None], canon=canon[None])
            self.gate.add(**written)  # exactly what is written
        self.done = max(self.done, upto)

    def finish(
        self,
        result: RenderResult,
        poses: np.ndarray,
        joints3d: np.ndarray,
        camera: Camera,
        software: dict[str, str] | None = None,
        others: list[PersonMotion] | None = None,
    ) -> ClipFiles:
        """Write the rest and land the clip. `poses`, `joints3d`: the first person's; `others`: the other
        people's (spec.others, in order)."""
        spec, tmp, name = self.spec, self.tmp, self.spec.name
        T = len(result.rgb)
        try:
            people = [PersonMotion(poses, joints3d), *(others or [])]
            if len(people) != len(spec.people):
                raise ValueError(f"the spec has {len(spec.people)} people but {len(people)} were given")
            if any(len(p.poses) != T or len(p.joints) != T for p in people):
                raise ValueError(
                    f"{T} rendered frames but people with other numbers of poses or joint frames"
                )
            self.feed(result, T)
            finish_encoder(self._video(result.rgb.shape[1], result.rgb.shape[2]), tmp / f"{name}.mp4")
            joints = np.stack([np.asarray(p.joints, np.float64) for p in people])  # (P, T, 24, 3)
            # One person's instance is the body (the pass says the same); several people's is the pass.
            inst = np.asarray(result.inst) if spec.others else (np.asarray(result.segm) > 0).astype(np.uint8)
            visible = visible_joints(camera, spec.convention, joints, np.asarray(result.depth), inst)
            bbox = person_boxes(camera, inst, len(people))
            info = info_dict(spec, people, camera, visible, bbox)
            joints2d = np.asarray(info["joints2D"]).reshape(len(people), 2, 24, T)
            # The quality gate, before any file has its final name: a clip that fails is not stored.
            quality = self.gate.finish(
                joints2d=joints2d.transpose(0, 3, 2, 1),
                reprojected=camera.project_frames(joints),
                video=tmp / f"{name}.mp4",
                visible=visible,
                bbox=bbox,
            )
            quality.raise_for_problems(name)
            savemat(tmp / f"{name}_info.mat", info)
            header = _mat_header()
            for prefix in self.elements:
                with open(tmp / f"{name}_{prefix}.mat", "wb") as mat:
                    mat.write(header)
                    mat.writelines(self.elements[prefix])
            # A small JPEG of the middle frame, for dashboards and people browsing the bucket.
            Image.fromarray(np.ascontiguousarray(result.rgb[T // 2], np.uint8)).save(
                tmp / f"{name}_thumb.jpg", quality=85
            )
            data_files = (
                [f"{name}.mp4"]
                + [f"{name}_{s}.mat" for s in ("info", *self.elements)]
                + [f"{name}_thumb.jpg"]
            )
            manifest = {
                "clip": name,
                "frames": T,
                "convention": spec.convention,  # what the values mean (README, "Output format")
                "qc": quality.stats,  # the quality gate's statistics (worker/qc.py)
                "spec": spec.model_dump(mode="json"),
                "software": software_versions(software),
                "guarantees": result.guarantees,  # what the engine's passes promise (farm.render.job.GUARANTEES)
                # Only with spec.shutter > 0: the RGB is motion-blurred, every other pass is the shutter's centre.
                **({} if (blur := motion_blur_manifest(spec.shutter)) is None else {"motion_blur": blur}),
                "files": [
                    {"name": f, "sha256": sha256_file(tmp / f), "size": (tmp / f).stat().st_size}
                    for f in data_files
                ],
            }
            manifest_name = f"{name}_manifest.json"
            (tmp / manifest_name).write_text(json.dumps(manifest, indent=1) + "\n")
            (self.final_dir / manifest_name).unlink(missing_ok=True)  # incomplete until the new one lands
            # The clip lands as a set (its temp folder, the manifest last), not file by file as
            # farm.core.files.atomic_write would; see the module docstring.
            for f in [*data_files, manifest_name]:
                os.replace(tmp / f, self.final_dir / f)
        finally:
            self.abort()
        rel = [Path(spec.output_dir) / f for f in [*data_files, manifest_name]]
        return ClipFiles(self.final_dir, rel, T, quality.stats)

    def abort(self) -> None:
        if self._ffmpeg is not None:
            stop_encoder(self._ffmpeg)
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_clip(
    root: Path,
    spec: ClipSpec,
    result: RenderResult,
    poses: np.ndarray,
    joints3d: np.ndarray,
    camera: Camera,
    software: dict[str, str] | None = None,
    others: list[PersonMotion] | None = None,
) -> ClipFiles:
    """Write the clip's files under `root` in the SURREAL layout, atomically (see the module docstring)."""
    return ClipWriter(root, spec).finish(result, poses, joints3d, camera, software, others)


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
    writer = ClipWriter(root, clip.job.spec)
    try:
        result = renderer.render(clip.job, progress, sink=writer.feed)
        t2 = time.perf_counter()
        files = writer.finish(result, clip.poses, clip.joints, clip.job.camera, result.software, clip.others)
    finally:
        writer.abort()
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(prepare=t1 - t0, render=t2 - t1, write=t3 - t2)
        timings.update({f"blender_{k}": v for k, v in result.timings.items()})
    return files


def blender_files_producer(renderer: Renderer, settings: Settings | None = None) -> Producer:
    """What worker.process needs: (spec, folder) -> (files relative to folder, frame count, qc statistics)."""

    def produce(spec: ClipSpec, folder: Path) -> tuple[list[Path], int, dict[str, Any] | None]:
        files = render_clip_files(spec, renderer, folder, settings=settings)
        return files.files, files.frames, files.qc

    return produce
