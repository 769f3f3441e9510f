"""The quality gate: a clip's content is checked before its files are stored, and described by a few numbers.

`assess` is the one check. The writer (worker/output.py, `ClipWriter.finish`) runs it on the rendered arrays
and the freshly encoded mp4 before any file gets its final name, and raises `QualityError` when it finds a
problem, so a clip that fails is never stored or marked done. `farm qc` runs it on stored files read back
(`assess_files`, `qc_folder`, `qc_stored`).

Problems (each one sentence): a frame count other than the spec's; non-finite values; segmentation and depth
disagreeing about the body (segm > 0 exactly where depth < 1e10, background depth exactly 1e10); labels
outside 0..24; instances disagreeing with the segmentation (inst > 0 exactly where segm > 0) or naming a person
the clip lacks; `joints2D` that do not reproject from `joints3D` and the camera; a visible joint outside its
person's box; an mp4 that does not decode to the clip's frames at the camera's size.

Statistics (the manifest's "qc" object and the clips table's `qc` column):
- `frames`: frames in the clip;
- `frames_with_body`: frames with any body pixel (segm > 0);
- `body_pixels_mean`: body pixels per frame, averaged over the clip;
- `joints_in_image`: the fraction of the clip's joints whose `joints2D` lie in [0, W) x [0, H);
- `flow_mean`: mean optical-flow magnitude over the clip's body pixels, in pixels (0 without any);
- `people`: one object per person (the first is the clip's first person): `pixels_mean` (their visible pixels
  per frame), `frames_visible` (frames showing any of them), `joints_in_image` and `joints_visible` (the
  fractions of their joints in the image and marked visible).
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from farm.core.errors import FarmError
from farm.core.spec import CLIP_LENGTH
from farm.render.camera import WORLD_TO_CV, project_frames, project_with_info
from farm.render.job import BACKGROUND_DEPTH
from worker.clip_files import (
    BadClipFile,
    info_cameras,
    one_line,
    read_corr,
    read_info,
    read_manifest,
    read_pass,
)

if TYPE_CHECKING:
    from farm.core.storage import Storage

MAX_LABEL = 24
# How far stored joints2D may lie from the projection of joints3D: the surreal convention rounds them to whole
# pixels (as the original did), the clean one stores the float32 projection itself.
REPROJECTION_TOLERANCE_PX = {"surreal": 0.5 + 1e-3, "clean": 1e-2}
PASSES = (("depth", "depth"), ("segm", "segm"), ("gtflow", "flow"), ("normal", "normal"))
CLIP_FILES = (".mp4", "_info.mat", "_depth.mat", "_segm.mat", "_gtflow.mat", "_normal.mat", "_manifest.json")


def clip_suffixes(people: int, correspondence: bool = False) -> tuple[str, ...]:
    """The files of a clip of `people` people: SURREAL's, `_inst.mat` when there are several, and `_corr.mat`
    when its spec asks for correspondence (ClipSpec.correspondence)."""
    return CLIP_FILES + (("_inst.mat",) if people > 1 else ()) + (("_corr.mat",) if correspondence else ())


class QualityError(FarmError):
    """A clip's content failed the quality gate; the message lists every problem, one sentence each."""


@dataclass(frozen=True)
class Quality:
    stats: dict[str, Any]  # see the module docstring; a statistic is None when its array could not be read
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self, clip: str) -> None:
        if self.problems:
            raise QualityError(f"{clip} failed the quality gate: " + " ".join(self.problems))


def _where(per_frame: np.ndarray) -> str:
    """'in frame 4' or 'in 3 frames from frame 4' for per-frame counts or a (T,) mask of frames."""
    frames = np.flatnonzero(per_frame) + 1
    if len(frames) == 1:
        return f"in frame {frames[0]}"
    return f"in {len(frames)} frames from frame {frames[0]}"


def _count(n: int | np.integer[Any], what: str) -> str:
    return f"{int(n):,} {what}" + ("" if n == 1 else "s")


def _all_finite(a: np.ndarray) -> bool:
    # A float64 sum of float32 values cannot overflow, so it is finite exactly when every value is (and it
    # reads the array once without a boolean copy of it).
    return bool(np.isfinite(np.sum(a, dtype=np.float64)))


def _per_frame(mask: np.ndarray) -> np.ndarray:
    """(n, ...) boolean -> (n,) counts."""
    return np.count_nonzero(mask.reshape(len(mask), -1), axis=1)


def decode_video(path: Path, max_frames: int | None = None) -> tuple[int, int, int]:
    """Decode the mp4 once, at most `max_frames` frames of it: (frames, width, height). Raises if ffmpeg cannot
    read it (worker/video.py's `decoded`: H.264 in an mp4 only)."""
    from worker.video import decoded

    with decoded(path, max_frames) as (width, height, frames):
        count = 0
        for frame in frames:
            if len(frame) != width * height * 3:
                raise RuntimeError(f"frame {count + 1} is truncated")
            count += 1
    return count, width, height


PASS_SHAPES = {"depth": (), "segm": (), "flow": (2,), "normal": (3,), "inst": (), "uv": (2,), "canon": (3,)}
# <name>_corr.mat's (ClipSpec.correspondence): finite on the body, NaN elsewhere
CORR_PASSES = ("uv", "canon")
# How far a moving camera's stored camR may be from a rotation (float32 storage is ~1e-7 off)
ROTATION_TOLERANCE = 1e-3


def _corr_wrong(a: np.ndarray, body: np.ndarray) -> np.ndarray:
    """(n, H, W, C) correspondence frames -> (n, H, W): pixels not finite on the body or not NaN off it."""
    return np.where(body, ~np.isfinite(a).all(axis=-1), ~np.isnan(a).all(axis=-1))


class Gate:
    """The gate, fed a clip's pass frames in order as they are written (`add`), then `finish`ed with the joints
    and the mp4. The writer feeds it frame by frame while Blender renders; `assess` feeds it whole arrays.

    `frames`: what the spec says (None: unknown); `size`: (width, height); `problems`: found before (while
    reading files).
    """

    def __init__(
        self,
        frames: int | None,
        convention: str | None,
        size: tuple[int, int],
        problems: list[str] | None = None,
        people: int = 1,
    ) -> None:
        self.frames, self.convention, self.people = frames, convention, people
        self.width, self.height = size
        self.problems = list(problems or [])
        self.lengths: dict[str, int] = {}
        self.unusable: set[str] = set()  # passes of the wrong shape: reported once, not checked further
        self.counts: dict[str, list[np.ndarray]] = {}  # per-frame counts of each kind of bad pixel, and body
        self.labels = (0, 0)
        self.flow_sum, self.flow_pixels = 0.0, 0
        self.person_pixels: list[np.ndarray] = []  # (n, P) pixels of each person per frame

    def _usable(self, name: str, a: np.ndarray | None) -> np.ndarray | None:
        if a is None or name in self.unusable:
            return None
        want = (self.height, self.width, *PASS_SHAPES[name])
        if a.shape[1:] != want:
            self.unusable.add(name)
            got = "x".join(map(str, a.shape[1:]))
            self.problems.append(f"{name} has frames of shape {got}, want {'x'.join(map(str, want))}.")
            return None
        self.lengths[name] = self.lengths.get(name, 0) + len(a)
        return a

    def _note(self, kind: str, per_frame: np.ndarray) -> None:
        self.counts.setdefault(kind, []).append(per_frame)

    def add(
        self,
        depth: np.ndarray | None = None,
        segm: np.ndarray | None = None,
        flow: np.ndarray | None = None,
        normal: np.ndarray | None = None,
        inst: np.ndarray | None = None,
        uv: np.ndarray | None = None,
        canon: np.ndarray | None = None,
    ) -> None:
        """The next frames of the passes, (n, H, W[, C]) each, the same frames of each (a pass that could not be
        read is None; a one-person clip's files hold no instances: `inst` None; `uv` and `canon` only for a
        clip with correspondence, ClipSpec.correspondence)."""
        d, s = self._usable("depth", depth), self._usable("segm", segm)
        corr = {name: self._usable(name, a) for name, a in (("uv", uv), ("canon", canon))}
        i = self._usable("inst", inst)
        if i is None and self.people == 1 and s is not None:
            i = (s > 0).astype(np.uint8)  # one person: the body's pixels are theirs (no _inst.mat)
        if i is not None and len(i):
            counts = np.stack([np.bincount(frame.ravel(), minlength=256) for frame in i])
            self.person_pixels.append(counts[:, 1 : self.people + 1])
            self._note("strangers", counts[:, self.people + 1 :].sum(axis=1))
            if s is not None and len(s) == len(i):
                self._note("inst disagree", _per_frame((i > 0) != (s > 0)))
        f, n = self._usable("flow", flow), self._usable("normal", normal)
        for name, a in (("depth", d), ("flow", f), ("normal", n)):
            if a is not None:
                self._note(
                    name, np.zeros(len(a), np.int64) if _all_finite(a) else _per_frame(~np.isfinite(a))
                )
        if s is None:
            return
        lo, hi = int(s.min(initial=0)), int(s.max(initial=0))
        if lo < 0 or hi > MAX_LABEL:
            self._note("labels", _per_frame((s < 0) | (s > MAX_LABEL)))
        self.labels = (min(self.labels[0], lo), max(self.labels[1], hi))
        fg = s > 0
        self._note("body", _per_frame(fg))
        for name, a in corr.items():
            if a is not None and len(a) == len(s):
                self._note(f"{name} disagree", _per_frame(_corr_wrong(a, fg)))
        if d is not None and len(d) == len(s):
            # segm > 0 exactly where depth < 1e10, and the background holds exactly 1e10.
            self._note("disagree", _per_frame(fg == (d == np.float32(BACKGROUND_DEPTH))))
            self._note("not positive", _per_frame(fg & ~(d > 0)))
        if f is not None and len(f) == len(s):
            moving = f[fg]
            self.flow_sum += float(np.hypot(moving[:, 0], moving[:, 1]).sum(dtype=np.float64))
            self.flow_pixels += len(moving)

    def _in_image(self, joints2d: np.ndarray) -> np.ndarray:
        """(..., 2) pixel coordinates -> (...) whether they lie in [0, W) x [0, H)."""
        x, y = joints2d[..., 0], joints2d[..., 1]
        return (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)

    def _check_people(
        self,
        joints2d: np.ndarray | None,
        visible: np.ndarray | None,
        bbox: np.ndarray | None,
        stats: dict[str, Any],
    ) -> None:
        """Per-person statistics, and every visible joint inside its person's box. `joints2d` (P, T, 24, 2)."""
        P = self.people
        people: list[dict[str, Any]] = [{} for _ in range(P)]
        if self.person_pixels:
            pixels = np.concatenate(self.person_pixels)
            for k in range(P):
                people[k]["pixels_mean"] = round(float(pixels[:, k].mean()), 1) if len(pixels) else 0.0
        T = None if joints2d is None else joints2d.shape[1]
        shapes_ok = True
        for name, a, want in (("visible", visible, (P, 24, T)), ("bbox", bbox, (P, 4, T))):
            if a is not None and (a.shape[:2] != want[:2] or (T is not None and a.shape[2] != T)):
                self.problems.append(f"{name} has shape {'x'.join(map(str, a.shape))}, want {P}x{want[1]}xT.")
                shapes_ok = False
        if joints2d is not None:
            inside = self._in_image(joints2d)
            for k in range(P):
                people[k]["joints_in_image"] = round(float(inside[k].mean()), 4) if inside[k].size else 0.0
        if visible is not None and shapes_ok:
            for k in range(P):
                people[k]["joints_visible"] = round(float(visible[k].mean()), 4) if visible[k].size else 0.0
        if bbox is not None and shapes_ok:
            for k in range(P):
                people[k]["frames_visible"] = int(np.count_nonzero(~np.isnan(bbox[k, 0])))
        if joints2d is not None and visible is not None and bbox is not None and shapes_ok:
            box = bbox.transpose(0, 2, 1)[:, :, None, :]  # (P, T, 1, 4)
            with np.errstate(invalid="ignore"):
                inside_box = (
                    (joints2d[..., 0] >= box[..., 0]) & (joints2d[..., 0] <= box[..., 2])
                    & (joints2d[..., 1] >= box[..., 1]) & (joints2d[..., 1] <= box[..., 3])
                )  # fmt: skip
            outside = visible.transpose(0, 2, 1) & ~inside_box  # (P, T, 24)
            if outside.any():
                n = int(outside.sum())
                self.problems.append(
                    f"{_count(n, 'visible joint')} {'lies' if n == 1 else 'lie'} outside the person's bbox "
                    f"{_where(outside.any(axis=(0, 2)))}."
                )
        stats["people"] = people

    def _counts(self, kind: str) -> np.ndarray:
        return np.concatenate(self.counts[kind]) if kind in self.counts else np.zeros(0, np.int64)

    def finish(
        self,
        joints2d: np.ndarray | None,
        reprojected: np.ndarray | None,
        video: Path | None,
        visible: np.ndarray | None = None,
        bbox: np.ndarray | None = None,
    ) -> Quality:
        """`joints2d` (T, 24, 2) or (P, T, 24, 2) as stored, `reprojected` the same shape: the projection of
        joints3D with the clip's camera; `video` the encoded mp4 (None: it could not be read, the problem already
        noted); `visible` (P, 24, T) and `bbox` (P, 4, T) as stored (None: not stored or unreadable)."""
        problems, frames = self.problems, self.frames
        width, height = self.width, self.height
        per_person: dict[str, np.ndarray] = {}
        joints: dict[str, np.ndarray] = {}
        for name, a in (("joints2D", joints2d), ("joints3D", reprojected)):
            if a is None:
                continue
            a = a[None] if a.ndim == 3 else a
            if a.shape[0] != self.people or a.shape[2:] != (24, 2):
                what = "joints2D" if name == "joints2D" else "the projection of joints3D"
                want = f"{self.people}xTx24x2" if self.people > 1 else "Tx24x2"
                problems.append(f"{what} has shape {'x'.join(map(str, a.shape))}, want {want}.")
                continue
            per_person[name] = a
            joints[name] = a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1, 2)  # (T, P * 24, 2)
        lengths = {**self.lengths, **({"joints2D": len(joints["joints2D"])} if "joints2D" in joints else {})}
        wrong: dict[int, list[str]] = {}
        for name, count in lengths.items():
            if frames is not None and count != frames:
                wrong.setdefault(count, []).append(name)
        for count, names in wrong.items():  # one sentence per count: a short render is one problem
            have = "has" if len(names) == 1 else "have"
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            problems.append(f"{listed} {have} {count} frames, the spec says {frames}.")
        for name in ("depth", "flow", "normal"):
            bad = self._counts(name)
            if bad.any():
                problems.append(f"{name} has {_count(bad.sum(), 'non-finite value')} {_where(bad)}.")
        for name, a in joints.items():
            if not _all_finite(a):
                bad = _per_frame(~np.isfinite(a))
                problems.append(f"{name} has {_count(bad.sum(), 'non-finite value')} {_where(bad)}.")
        outside = self._counts("labels")
        if outside.any():
            lo, hi = self.labels
            problems.append(
                f"segm holds labels {lo}..{hi} on {_count(outside.sum(), 'pixel')} {_where(outside)}, "
                f"want 0..{MAX_LABEL}."
            )
        disagree = self._counts("disagree")
        if disagree.any():
            problems.append(
                f"segm and depth disagree on {_count(disagree.sum(), 'pixel')} {_where(disagree)} "
                f"(want segm > 0 exactly where depth < {BACKGROUND_DEPTH:.0e}, and {BACKGROUND_DEPTH:.0e} elsewhere)."
            )
        for kind, sentence in (
            (
                "inst disagree",
                "inst and segm disagree on {n} {where} (want inst > 0 exactly where segm > 0).",
            ),
            ("strangers", "inst names a person the clip lacks on {n} {where} (it has {p})."),
        ):
            bad = self._counts(kind)
            if bad.any():
                n = _count(bad.sum(), "pixel")
                people = f"{self.people} {'person' if self.people == 1 else 'people'}"
                problems.append(sentence.format(n=n, where=_where(bad), p=people))
        for name in CORR_PASSES:
            bad = self._counts(f"{name} disagree")
            if bad.any():
                problems.append(
                    f"{name} and segm disagree on {_count(bad.sum(), 'pixel')} {_where(bad)} "
                    "(want finite values where segm > 0 and NaN elsewhere)."
                )
        not_positive = self._counts("not positive")
        if not_positive.any():
            problems.append(
                f"depth is not positive on {_count(not_positive.sum(), 'body pixel')} {_where(not_positive)}."
            )
        stats: dict[str, Any] = {
            "frames": frames if frames is not None else lengths.get("segm", lengths.get("depth")),
            "frames_with_body": None,
            "body_pixels_mean": None,
            "joints_in_image": None,
            "flow_mean": None,
        }
        if "body" in self.counts:
            body = self._counts("body")
            stats["frames_with_body"] = int(np.count_nonzero(body))
            stats["body_pixels_mean"] = round(float(body.mean()), 1) if len(body) else 0.0
            if "flow" in self.lengths and "flow" not in self.unusable:
                stats["flow_mean"] = round(self.flow_sum / self.flow_pixels, 4) if self.flow_pixels else 0.0
        j, r = joints.get("joints2D"), joints.get("joints3D")
        if j is not None:
            inside = self._in_image(j)
            stats["joints_in_image"] = round(float(inside.mean()), 4) if inside.size else 0.0
            if r is not None and self.convention is not None and len(r) == len(j):
                tolerance = REPROJECTION_TOLERANCE_PX[self.convention]
                with np.errstate(invalid="ignore"):
                    off = np.abs(j.astype(np.float64) - r).max(axis=2)
                    # Only joints within a frame's size of the image: a joint near the camera's plane projects to
                    # hundreds of thousands of pixels, where float32 storage alone moves it by whole pixels.
                    near = (np.abs(r[..., 0] - width / 2) < 1.5 * width) & (
                        np.abs(r[..., 1] - height / 2) < 1.5 * height
                    )
                far = (off > tolerance) & near  # NaN compares False: non-finite joints are reported above
                if far.any():
                    problems.append(
                        f"joints2D lie up to {float(np.nanmax(off[far])):.3g} px from the projection of joints3D "
                        f"{_where(far.any(axis=1))} (allowed {tolerance:g} px in the {self.convention} convention)."
                    )
        self._check_people(per_person.get("joints2D"), visible, bbox, stats)
        if video is not None:
            try:
                # one frame past the spec's count shows there are more, and bounds the work
                count, w, h = decode_video(video, (frames or CLIP_LENGTH) + 1)
            except BadClipFile as exc:
                problems.append(f"the mp4 does not decode (it {exc.problem}).")
            except Exception as exc:
                problems.append(f"the mp4 does not decode ({one_line(exc)}).")
            else:
                if (w, h) != (width, height):
                    problems.append(f"the mp4's frames are {w}x{h}, want {width}x{height}.")
                if frames is not None and count > frames:
                    problems.append(f"the mp4 holds more than the {frames} frames the spec says.")
                elif frames is not None and count != frames:
                    problems.append(f"the mp4 decodes to {count} frames, the spec says {frames}.")
        return Quality(stats, problems)


def assess(
    frames: int | None,
    convention: str | None,
    size: tuple[int, int],
    *,
    depth: np.ndarray | None,
    segm: np.ndarray | None,
    flow: np.ndarray | None,
    normal: np.ndarray | None,
    joints2d: np.ndarray | None,
    reprojected: np.ndarray | None,
    video: Path | None,
    problems: list[str] | None = None,
    people: int = 1,
    inst: np.ndarray | None = None,
    visible: np.ndarray | None = None,
    bbox: np.ndarray | None = None,
    uv: np.ndarray | None = None,
    canon: np.ndarray | None = None,
) -> Quality:
    """Check one clip's arrays and compute its statistics: the Gate fed all frames at once.

    `frames`: what the spec says (None: unknown); `size`: (width, height); pass arrays are (T, H, W[, C]) as
    written; `joints2d` (T, 24, 2) as stored and `reprojected` (T, 24, 2) the projection of joints3D with the
    clip's camera; `video` the encoded mp4. An array that could not be read is None, its problem already in
    `problems`. With `people` > 1 the joints are (P, T, 24, 2); `inst`, `visible`, `bbox`, `uv`, `canon` as Gate
    takes them.
    """
    gate = Gate(frames, convention, size, problems, people)
    gate.add(depth, segm, flow, normal, inst, uv, canon)
    return gate.finish(joints2d, reprojected, video, visible, bbox)


# ---- stored files (`farm qc`) ----


def _read(problems: list[str], read: Callable[..., Any], path: Path, *args: Any) -> Any:
    """read(path, *args) of the shared reader (worker/clip_files.py), or None with its sentence a problem."""
    try:
        return read(path, *args)
    except BadClipFile as exc:
        problems.append(f"{exc.path.name} {exc.problem}.")
        return None


def assess_files(folder: Path, name: str) -> Quality:
    """Check the clip `name`'s files in `folder` (as written: `<name>.mp4`, `<name>_info.mat`, ...), read with
    the bounds their spec gives (worker/clip_files.py)."""
    problems: list[str] = []
    frames: int | None = None
    convention: str | None = None
    size = (320, 240)
    people = 1
    moving = correspondence = False
    try:
        spec, manifest, _ = read_manifest(folder, name)
    except BadClipFile as exc:
        problems.append(f"{exc.path.name} {exc.problem}.")
    else:
        frames, size, people = spec.frame_count, (spec.camera.width, spec.camera.height), len(spec.people)
        moving, correspondence = spec.camera_motion is not None, spec.correspondence
        convention = manifest.get("convention") or spec.convention
        if convention not in REPROJECTION_TOLERANCE_PX:
            problems.append(f"{name}_manifest.json names an unknown convention {convention!r}.")
            convention = None
    limit = frames or CLIP_LENGTH  # without a spec, no file may hold more than the longest clip

    joints2d = reprojected = visible = bbox = None
    info = _read(
        problems, read_info, folder / f"{name}_info.mat", limit, people, False
    )  # the gate checks shapes
    if info is not None:
        # (P,) 2|3 x 24 x T -> (P,) T x 24 x 2|3; a one-person clip has no person axis
        order = (2, 1, 0) if people == 1 else (0, 3, 2, 1)
        known = len(problems)
        cameras = _read(problems, info_cameras, folder / f"{name}_info.mat", info)
        static = cameras is None and len(problems) == known  # not a moving camera's unreadable keys
        if static and moving:
            problems.append(
                f"{name}_info.mat lacks camK, camR and camT, which a moving camera's clip stores."
            )
            static = False
        try:
            joints2d = np.asarray(info["joints2D"], np.float32).transpose(order)
            joints3d = np.asarray(info["joints3D"], np.float64).transpose(order)
            cam_loc = np.asarray(info["camLoc"], np.float64).reshape(3)
            if convention is not None and cameras is not None:  # a moving camera: each frame's own
                reprojected = _reproject_moving(problems, name, convention, cameras, joints3d)
            elif convention is not None and static:
                reprojected = project_with_info(convention, cam_loc, joints3d)
        except Exception as exc:
            problems.append(
                f"{name}_info.mat lacks usable joints2D, joints3D or camLoc ({type(exc).__name__}: {one_line(exc)})."
            )
            joints2d = reprojected = None
        if frames is None and joints2d is not None:
            frames = joints2d.shape[-3]
        # Clips written before visibility existed lack both keys.
        visible = np.asarray(info["visible"], bool) if "visible" in info else None
        bbox = np.asarray(info["bbox"], np.float32) if "bbox" in info else None
    passes: dict[str, np.ndarray | None] = {"inst": None}
    for prefix, array in PASSES + ((("inst", "inst"),) if people > 1 else ()):
        # n <= limit frames; the gate names a count other than the spec's
        passes[array] = _read(
            problems, read_pass, folder / f"{name}_{prefix}.mat", prefix, limit, *size, False
        )
    corr = None
    if correspondence:  # <name>_corr.mat, only where the spec asks for it
        corr = _read(problems, read_corr, folder / f"{name}_corr.mat", limit, *size, False)
    video = folder / f"{name}.mp4"
    if not video.is_file():
        problems.append(f"{video.name} is missing.")
    return assess(
        frames,
        convention,
        size,
        depth=passes["depth"],
        segm=passes["segm"],
        flow=passes["flow"],
        normal=passes["normal"],
        joints2d=joints2d,
        reprojected=reprojected,
        video=video if video.is_file() else None,
        problems=problems,
        people=people,
        inst=passes["inst"],
        visible=visible,
        bbox=bbox,
        uv=None if corr is None else corr["uv"],
        canon=None if corr is None else corr["canon"],
    )


def _reproject_moving(
    problems: list[str],
    name: str,
    convention: str,
    cameras: tuple[np.ndarray, np.ndarray, np.ndarray],
    joints3d: np.ndarray,
) -> np.ndarray | None:
    """joints3D (..., T, 24, 3) through a moving camera's per-frame K, R, t (`_info.mat`'s camK, camR, camT),
    after checking that each camR is a rotation of the convention's handedness (a reflection in surreal's);
    None, with the problem noted, when their frames are not joints3D's."""
    K, R, t = cameras
    if len(K) != joints3d.shape[-3]:
        problems.append(
            f"{name}_info.mat holds camK, camR and camT of {len(K)} frames but joints3D of {joints3d.shape[-3]}."
        )
        return None
    handedness = np.sign(np.linalg.det(WORLD_TO_CV[convention]))
    with np.errstate(invalid="ignore"):
        off = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
        bad = ~(off <= ROTATION_TOLERANCE) | ~(np.linalg.det(R) * handedness > 0)
    if bad.any():
        kind = "a reflection" if handedness < 0 else "a rotation"
        problems.append(f"camR is not {kind} (the {convention} convention's) {_where(bad)}.")
    return project_frames(K, R, t, joints3d)


@dataclass(frozen=True)
class ClipQuality:
    clip: str
    where: str  # the clip's folder or storage location
    quality: Quality

    def as_dict(self) -> dict[str, Any]:
        return {
            "clip": self.clip,
            "where": self.where,
            **self.quality.stats,
            "ok": self.quality.ok,
            "problems": self.quality.problems,
        }


def clips_in_folder(root: Path) -> list[tuple[Path, str]]:
    """(folder, clip name) of every clip under `root`, found by its manifest; the writer's hidden temporary
    folders are skipped."""
    found = []
    for manifest in sorted(root.rglob("*_manifest.json")):
        if any(part.startswith(".") for part in manifest.relative_to(root).parts):
            continue
        found.append((manifest.parent, manifest.name.removesuffix("_manifest.json")))
    return found


def _in_order(fn: Callable[[Any], ClipQuality], items: Iterable[Any], threads: int) -> Iterator[ClipQuality]:
    """fn over items on `threads` threads, results in order, a bounded number in flight."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque[Future[ClipQuality]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def qc_folder(root: Path, threads: int = 2) -> Iterator[ClipQuality]:
    """Every clip under a local output folder (render-clip's `--out`, the demo's folder, a storage root)."""
    if not root.is_dir():
        raise FarmError(f"{root} is not a folder; pass the output root that holds the clips")
    clips = clips_in_folder(root)
    if not clips:
        raise FarmError(
            f"no clips under {root} (no <clip>_manifest.json files); pass the folder the clips were written to"
        )
    return _in_order(lambda c: ClipQuality(c[1], str(c[0]), assess_files(*c)), clips, threads)


def qc_stored(specs: Iterable[dict[str, Any]], storage: Storage, threads: int = 2) -> Iterator[ClipQuality]:
    """The clips of these specs, read back from `storage` (farm.core.storage.Storage): a local folder is read in
    place, S3 objects are downloaded into a temporary folder first. A storage that fails (not merely a
    missing object) stops with its FarmError."""
    from farm.core.spec import parse_spec
    from farm.core.storage import LocalStorage

    def one(raw: dict[str, Any]) -> ClipQuality:
        spec = parse_spec(raw)
        where = storage.uri(spec.output_dir)
        if isinstance(storage, LocalStorage):
            return ClipQuality(spec.name, where, assess_files(storage.root / spec.output_dir, spec.name))
        with tempfile.TemporaryDirectory(prefix=f"qc-{spec.name}-") as tmp:
            for suffix in clip_suffixes(len(spec.people), spec.correspondence):
                key = f"{spec.output_dir}/{spec.name}{suffix}"
                try:
                    storage.get_file(key, Path(tmp) / f"{spec.name}{suffix}")
                except FarmError:
                    if storage.stat(key) is not None:
                        raise  # there, but could not be read: the storage's own one-sentence error
                    # missing: assess_files says so
            return ClipQuality(spec.name, where, assess_files(Path(tmp), spec.name))

    return _in_order(one, specs, threads)
