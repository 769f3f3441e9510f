"""Reading one rendered clip into arrays of the clean convention, whatever convention it was written in.

No torch here: `farm export` and the tests use it directly; farm/dataset/torch_data.py wraps it in a Dataset.

What an item means (the clean convention of farm/render/__init__.py and the README):
- rgb (H, W, 3) uint8 as decoded from the mp4; segm (H, W) uint8 0..24; parts14 (H, W) uint8 0..14 (the
  paper's map); depth (H, W) float32 planar metres, 1e10 on background; depth_bins (H, W) uint8: 0 background,
  1..19 the paper's 45 mm bins of depth minus the pelvis' (10 is the pelvis' bin, 1 the nearest);
  normal (H, W, 3) unit camera-frame normals (OpenCV axes), 0 on background; flow (H, W, 2) forward flow
  t -> t+1 in pixels, 0 on the last frame; joints2D (24, 2) pixels with centres at integers, from joints3D
  (24, 3) world metres and the camera K (3, 3), R (3, 3), t (3,); visible (24,) bool and bbox (4,) float32
  (x_min, y_min, x_max, y_max pixel edges, NaN when the person does not show) as `_info.mat` stores them
  (worker/visibility.py), bbox moved into these pixel coordinates; inst (H, W) uint8, 0 background, k for
  person k. A clip of P > 1 people gives joints2D (P, 24, 2), joints3D (P, 24, 3), visible (P, 24) and bbox
  (P, 4), the first person first.
- A surreal clip is unmirrored: every image is flipped left-right, the surreal world is turned into the clean
  one (the motion's frame, +Y up) with the rotation and pelvis its spec gives, depth along the ray becomes
  planar z, world normals become camera normals, and the backward flow of frame t+1 (the original's, sign
  turned) becomes the forward flow of frame t by one fixed-point step (exact where the motion between two
  frames is locally a translation; approximate at occlusions). The original renders without the half-pixel
  shift, so its unflipped pixel centres sit at K's (c + 0.5, r + 0.5): K's principal point is moved by
  -0.5 px in both axes to say so. The background image was composited unmirrored, so after the flip it is a
  mirror image (the body is not).
- A moving camera (ClipSpec.camera_motion; `_info.mat` holds camK, camR, camT, 3x3xT and 3xT): K, R and t are
  each frame's own, from those keys (converted as above for a surreal clip, frame by frame), joints2D is
  joints3D through frame t's camera, a surreal clip's depth is divided by frame t's ray lengths and its normals
  turned by frame t's R, and the background moves in the flow too (it is solved on every pixel).
- A clip with correspondence (ClipSpec.correspondence, `<name>_corr.mat`) adds uv (H, W, 2) float32, the
  texture coordinate seen at the pixel, and canon (H, W, 3) float32, that point on the person's canonical body
  in metres; both NaN on background and unflipped like every image.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from farm.core.errors import FarmError
from farm.core.files import file_digest
from farm.core.spec import ClipSpec, parse_spec
from farm.render.camera import (
    SURREAL_FROM_ZUP,
    Camera,
    make_camera,
    rot_z,
    yaw_matrix,
    zup_from_motion,
)
from worker.clip_files import BadClipFile, info_cameras, manifest_frames, read_corr, read_info, read_pass
from worker.clip_files import read_manifest as read_clip_manifest
from worker.video import read_mp4

if TYPE_CHECKING:
    from farm.core.storage import Storage

BACKGROUND_DEPTH = 1e10
# The paper's 14 parts for SMPL labels 1..24 (index 0 is the background): 1 head, 2 torso, 3-5 right upper
# arm / forearm / hand, 6-8 the same on the left, 9-11 right upper leg / leg / foot, 12-14 the same on the left.
PARTS14 = np.array(
    [0, 2, 12, 9, 2, 13, 10, 2, 14, 11, 2, 14, 11, 2, 2, 2, 1, 6, 3, 7, 4, 8, 5, 8, 5], np.uint8
)
PART14_NAMES = (
    "background", "head", "torso", "right upper arm", "right forearm", "right hand", "left upper arm",
    "left forearm", "left hand", "right upper leg", "right lower leg", "right foot", "left upper leg",
    "left lower leg", "left foot",
)  # fmt: skip
DEPTH_BIN_M = 0.045
DEPTH_BINS = 19  # 9 in front of the pelvis, its own, 9 behind; class 0 is the background
PELVIS = 0
PASS_FILES = (("depth", "depth"), ("segm", "segm"), ("gtflow", "flow"), ("normal", "normal"))


class ClipFileError(FarmError):
    """A clip's file is missing or unreadable: one sentence naming it.

    A DataLoader worker's exception comes back to the main process as `type(exc)(text)`, the text holding the
    worker's traceback; the constructor keeps only the sentence, so the main process gets the same one."""

    def __init__(self, message: str) -> None:
        if message.startswith("Caught "):
            found = re.findall(r"ClipFileError: (.+)", message)
            message = found[-1].strip() if found else message.splitlines()[-1]
        super().__init__(message)


@dataclass(frozen=True)
class ClipRef:
    """One clip: its local folder (downloaded first for S3), name, spec and manifest."""

    folder: Path
    name: str
    spec: ClipSpec
    manifest: dict[str, Any]

    @property
    def qc(self) -> dict[str, Any]:
        return dict(self.manifest.get("qc") or {})

    @property
    def convention(self) -> str:
        return str(self.manifest.get("convention") or self.spec.convention)

    @property
    def motion_blur(self) -> Any:
        """The manifest's "motion_blur" (a clip rendered with ClipSpec.shutter > 0), None without."""
        return self.manifest.get("motion_blur")

    @property
    def frames(self) -> int:
        """The manifest's frame count, 1 up to the spec's (a manifest is as untrusted as the clip's files)."""
        try:
            return manifest_frames(self.folder / f"{self.name}_manifest.json", self.manifest, self.spec)
        except BadClipFile as exc:
            raise _clip_error(exc) from None


def _clip_error(exc: BadClipFile) -> ClipFileError:
    """The shared reader's sentence (worker/clip_files.py), with what to do about it."""
    if exc.problem == "is missing":
        return ClipFileError(f"{exc}; render the clip again or leave it out")
    return ClipFileError(f"{exc}; it is corrupt, render the clip again")


def read_manifest(folder: Path, name: str) -> ClipRef:
    try:
        spec, manifest, _ = read_clip_manifest(folder, name)  # also checks its frame count against the spec
    except BadClipFile as exc:
        raise _clip_error(exc) from None
    return ClipRef(folder, name, spec, manifest)


@dataclass(frozen=True)
class StoredClip:
    """A done clip as the database holds it (what `SurrealClips.from_farm` reads): its spec, the quality gate's
    statistics, and its files' {key: {"size", "sha256"}}, which every downloaded or cached file must match."""

    spec: dict[str, Any]
    qc: dict[str, Any] | None = None
    checksums: dict[str, Any] | None = None


def fetch_clip(storage: Storage, spec: dict[str, Any], cache: Path) -> ClipRef:
    """A stored clip (its spec dict from the database): a local storage is read in place, S3 objects are
    downloaded once into `cache`. A missing object is left for the reader to name; a failing storage raises."""
    from farm.core.storage import LocalStorage
    from worker.qc import clip_suffixes

    parsed = parse_spec(spec)
    if isinstance(storage, LocalStorage):
        return read_manifest(storage.root / parsed.output_dir, parsed.name)
    folder = cache / parsed.output_dir
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in clip_suffixes(len(parsed.people), parsed.correspondence):
        key, local = f"{parsed.output_dir}/{parsed.name}{suffix}", folder / f"{parsed.name}{suffix}"
        if not local.is_file():
            try:
                storage.get_file(key, local)
            except FarmError:
                if storage.stat(key) is not None:
                    raise
    return read_manifest(folder, parsed.name)


def fetch_checked(storage: Storage, stored: StoredClip, spec: ClipSpec, cache: Path) -> ClipRef:
    """fetch_clip, after checking every file it would download or reuse from `cache` against the database's
    size and sha256: a cached copy that differs is downloaded again once, a download that differs is refused
    in one sentence naming the file. A local storage is read in place, unchecked, as fetch_clip does."""
    from farm.core.storage import LocalStorage
    from worker.qc import clip_suffixes

    if stored.checksums is not None and not isinstance(storage, LocalStorage):
        folder = cache / spec.output_dir
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in clip_suffixes(len(spec.people), spec.correspondence):
            key = f"{spec.output_dir}/{spec.name}{suffix}"
            _download_checked(storage, key, folder / f"{spec.name}{suffix}", stored.checksums.get(key))
    return fetch_clip(storage, stored.spec, cache)


def _download_checked(storage: Storage, key: str, local: Path, recorded: Any) -> None:
    if not (isinstance(recorded, dict) and {"size", "sha256"} <= recorded.keys()):
        raise ClipFileError(
            f"the database records no size and sha256 for {storage.uri(key)}, so its download cannot be "
            "checked; run `farm verify` on the farm"
        )
    if local.is_file() and _matches(local, recorded):
        return
    local.unlink(missing_ok=True)  # a cached copy that differs (a torn or altered file) is fetched again
    try:
        storage.get_file(key, local)
    except FarmError:
        if storage.stat(key) is not None:
            raise
        return  # not in storage: left for the reader to name, as fetch_clip does
    if not _matches(local, recorded):
        local.unlink()
        raise ClipFileError(
            f"{storage.uri(key)} does not match the size and sha256 the database records for it; it was "
            "changed or damaged in storage, so render the clip again"
        )


def _matches(path: Path, recorded: dict[str, Any]) -> bool:
    if path.stat().st_size != recorded["size"]:
        return False  # no need to read it
    return file_digest(path)[0] == recorded["sha256"]


def _read(read: Callable[..., Any], path: Path, *args: Any) -> Any:
    """read(path, *args) of the shared reader of the clip's files (worker/clip_files.py, worker/video.py),
    which bounds every file by the spec; its refusal as a ClipFileError."""
    try:
        return read(path, *args)
    except BadClipFile as exc:
        raise _clip_error(exc) from None


def surreal_to_clean(spec: ClipSpec, pelvis0_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, Camera]:
    """(A, b, camera) with X_clean = A X_surreal + b for this surreal clip's world, and the clip's own surreal
    camera (farm.render.camera.make_camera). X_s = S Rz U (X - p0) + S U p0 and X_c = Y (X - p0) + p0 for a
    body point X of the motion's frame, p0 its frame-0 pelvis (S = R_x(90), Rz the yaw about Z, U the motion's
    turn to Z-up, Y the yaw about +Y)."""
    S, U = SURREAL_FROM_ZUP, zup_from_motion(spec.motion.uri)
    A = yaw_matrix(spec.zrot) @ U.T @ rot_z(spec.zrot).T @ S.T
    p0 = U.T @ S.T @ np.asarray(pelvis0_world, np.float64)
    return A, p0 - A @ np.asarray(pelvis0_world, np.float64), make_camera(spec, p0)


def clean_camera(ref: ClipRef, people3d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(K, R, t, joints3D in the clean world) of the clip; people3d (P, T, 24, 3) as stored, the first person's
    frame-0 pelvis placing the camera; the joints come back (P, T, 24, 3)."""
    spec = ref.spec
    pelvis0 = people3d[0, 0, PELVIS]
    if ref.convention == "clean":
        cam = make_camera(spec, pelvis0)
        return cam.K, cam.R, cam.t, people3d
    A, b, cam = surreal_to_clean(spec, pelvis0)
    flip = np.diag([-1.0, 1.0, 1.0])  # the mirrored camera frame -> the unmirrored one
    R = flip @ cam.R @ A.T
    location = A @ cam.location + b
    K = cam.K.copy()
    K[0, 2] = cam.width - 1 + cam.pixel_centre - K[0, 2]  # unflipped column c is centred at c + pixel_centre
    K[1, 2] -= cam.pixel_centre
    return K, R, -R @ location, np.stack([joints3d @ A.T + b for joints3d in people3d])  # person by person


def clean_cameras(
    ref: ClipRef, people3d: np.ndarray, cameras: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """clean_camera for a moving camera: (K (T, 3, 3), R (T, 3, 3), t (T, 3), joints3D in the clean world) from
    the clip's own per-frame `cameras` (camK, camR, camT as worker.clip_files.info_cameras gives them), each frame
    converted as clean_camera converts the static one."""
    K, R, t = (np.asarray(a, np.float64) for a in cameras)
    if ref.convention == "clean":
        return K, R, t, people3d
    A, b, cam = surreal_to_clean(ref.spec, people3d[0, 0, PELVIS])
    flip = np.diag([-1.0, 1.0, 1.0])  # the mirrored camera frame -> the unmirrored one
    location = -np.einsum("tji,tj->ti", R, t) @ A.T + b  # each frame's centre, in the clean world
    R_clean = flip @ R @ A.T
    # the unflipped column c is centred at c + pixel_centre, the rows' centres move by -pixel_centre:
    # K_clean = F K flip with F: (u, v) -> (W - 1 + pixel_centre - u, v - pixel_centre)
    F = np.array(
        [[-1.0, 0.0, cam.width - 1 + cam.pixel_centre], [0.0, 1.0, -cam.pixel_centre], [0.0, 0.0, 1.0]]
    )
    K_clean = F @ K @ flip
    t_clean = -np.einsum("tij,tj->ti", R_clean, location)
    return K_clean, R_clean, t_clean, np.stack([joints3d @ A.T + b for joints3d in people3d])


def project(K: np.ndarray, R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    x = (points @ R.T + t) @ K.T
    return x[..., :2] / x[..., 2:3]


def project_frames(K: np.ndarray, R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`project` with each frame's camera: K, R (T, 3, 3), t (T, 3), points (T, ..., 3) -> (T, ..., 2)."""
    x = _to_camera_frames(R, t, points)
    x = np.einsum("tij,t...j->t...i", K, x)
    return x[..., :2] / x[..., 2:3]


def _to_camera_frames(R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (T, ..., 3) of the world into frame t's camera: R (T, 3, 3), t (T, 3)."""
    shape = (len(t),) + (1,) * (points.ndim - 2) + (3,)
    return np.einsum("tij,t...j->t...i", R, points) + t.reshape(shape)


def _forward_from_backward(backward: np.ndarray, body: np.ndarray, steps: int = 10) -> np.ndarray:
    """Forward flow of frames 0..T-2 from the backward flows of 1..T-1 (each at its own frame's pixels, pointing
    from t-1's position: p_t - p_{t-1}): f_t(p) = b_{t+1}(p + f_t(p)), solved on the body pixels of frame t
    (`body`, (T, H, W); the background does not move) by fixed-point steps with nearest-pixel lookups, starting
    from b_t (the same pixels' previous motion). Where no pixel of frame t+1 comes from p (p is covered at t+1)
    it does not settle; those pixels keep the last step's value."""
    T, H, W, _ = backward.shape
    forward = np.zeros_like(backward)
    for t in range(T - 1):
        rows, cols = np.nonzero(body[t])
        b, f = backward[t + 1], backward[t][rows, cols]  # the motion into frame t (0 for the first frame)
        for _ in range(steps):
            c = np.clip(np.rint(cols + f[:, 0]).astype(np.int64), 0, W - 1)
            r = np.clip(np.rint(rows + f[:, 1]).astype(np.int64), 0, H - 1)
            f = b[r, c]
        forward[t][rows, cols] = f
    return forward


def depth_bins(depth: np.ndarray, pelvis_z: np.ndarray | float) -> np.ndarray:
    """The paper's depth classes: 0 background, 1..19 = round((z - z_pelvis) / 45 mm) clamped to -9..9, + 10."""
    z = np.asarray(pelvis_z, np.float32).reshape(
        np.shape(pelvis_z) + (1, 1)[: depth.ndim - np.ndim(pelvis_z)]
    )
    bins = np.clip(np.rint((depth - z) / DEPTH_BIN_M), -9, 9).astype(np.int16) + 10
    return np.where(depth < BACKGROUND_DEPTH / 2, bins, 0).astype(np.uint8)


def load_clip(ref: ClipRef, with_rgb: bool = True) -> dict[str, np.ndarray]:
    """Every frame of the clip as (T, ...) arrays of the clean convention (see the module docstring)."""
    spec, T = ref.spec, ref.frames
    W, H = spec.camera.width, spec.camera.height
    P = len(spec.people)
    info_path = ref.folder / f"{ref.name}_info.mat"
    info = _read(read_info, info_path, T, P)
    try:
        stored = np.asarray(info["joints3D"], np.float64)
        people3d = (stored[None] if P == 1 else stored).transpose(0, 3, 2, 1)[:, :T]  # (P, T, 24, 3)
        assert people3d.shape == (P, T, 24, 3)
        visible = np.asarray(info["visible"], bool).transpose(2, 0, 1)[:T]  # (T, P, 24)
        bbox = np.asarray(info["bbox"], np.float32).transpose(2, 0, 1)[:T]  # (T, P, 4)
        assert visible.shape == (T, P, 24) and bbox.shape == (T, P, 4)
    except Exception as exc:
        shape = "3x24xT" if P == 1 else f"{P}x3x24xT"
        raise ClipFileError(
            f"{info_path} lacks a {shape} joints3D, {P}x24xT visible or {P}x4xT bbox ({type(exc).__name__}); "
            "render the clip again"
        ) from None
    cameras = _read(info_cameras, info_path, info)  # a moving camera's per-frame K, R, t; None: static
    if cameras is None and spec.camera_motion is not None:
        raise ClipFileError(
            f"{info_path} lacks camK, camR and camT, which a moving camera's clip stores; render the clip again"
        )
    out: dict[str, np.ndarray] = {}
    for prefix, key in PASS_FILES + ((("inst", "inst"),) if P > 1 else ()):
        out[key] = _read(read_pass, ref.folder / f"{ref.name}_{prefix}.mat", prefix, T, W, H)
    if P == 1:
        out["inst"] = (out["segm"] > 0).astype(np.uint8)
    if spec.correspondence:
        out.update(_read(read_corr, ref.folder / f"{ref.name}_corr.mat", T, W, H))  # uv, canon
    if with_rgb:
        out["rgb"] = _read(read_mp4, ref.folder / f"{ref.name}.mp4", W, H, T)
    if cameras is None:
        K, R, t, clean3d = clean_camera(ref, people3d)
    else:
        K, R, t, clean3d = clean_cameras(ref, people3d, cameras)
    joints3d = clean3d[0] if P == 1 else clean3d.transpose(1, 0, 2, 3)  # (T, 24, 3) or (T, P, 24, 3)
    if ref.convention == "surreal":
        # pixel c of the surreal frame spans [c, c + 1]; flipped, it is column W - 1 - c, spanning +-0.5
        bbox = np.stack(
            [W - 0.5 - bbox[..., 2], bbox[..., 1] - 0.5, W - 0.5 - bbox[..., 0], bbox[..., 3] - 0.5], -1
        )
        for key in out:
            out[key] = np.ascontiguousarray(out[key][:, :, ::-1])
        _, _, cam = surreal_to_clean(spec, people3d[0, 0, PELVIS])
        fg = out["segm"] > 0
        if cameras is None:
            out["depth"] = np.where(fg, out["depth"] / cam.ray_lengths, np.float32(BACKGROUND_DEPTH)).astype(
                np.float32
            )
            to_cam = np.diag([-1.0, 1.0, 1.0]) @ cam.R  # world normals -> the unmirrored camera frame
            out["normal"] = (out["normal"].astype(np.float64) @ to_cam.T).astype(np.float32) * fg[..., None]
            out["flow"] = _forward_from_backward(out["flow"].astype(np.float32), fg)
        else:  # each frame's own camera; the background moves too
            # frame t's ray lengths with its K (the surreal frame's pixels, so flipped as the depth was)
            rays = np.stack([replace(cam, K=k).ray_lengths[:, ::-1] for k in cameras[0]])
            out["depth"] = np.where(fg, out["depth"] / rays, np.float32(BACKGROUND_DEPTH)).astype(np.float32)
            to_cam = np.diag([-1.0, 1.0, 1.0]) @ cameras[1]  # (T, 3, 3): world -> frame t's unmirrored camera
            normal = np.einsum("tij,thwj->thwi", to_cam, out["normal"].astype(np.float64))
            out["normal"] = normal.astype(np.float32) * fg[..., None]
            out["flow"] = _forward_from_backward(out["flow"].astype(np.float32), np.ones_like(fg))
    first = joints3d[:, 0] if P > 1 else joints3d  # the first person's
    cam_z = (first @ R.T + t if cameras is None else _to_camera_frames(R, t, first))[..., 2]
    out["segm"] = out["segm"].astype(np.uint8)
    out["parts14"] = PARTS14[out["segm"]]
    out["depth"] = out["depth"].astype(np.float32)
    out["depth_bins"] = depth_bins(out["depth"], cam_z[:, PELVIS])
    out["normal"] = out["normal"].astype(np.float32)
    out["flow"] = out["flow"].astype(np.float32)
    out["joints3D"] = joints3d.astype(np.float32)
    if cameras is None:
        out["joints2D"] = project(K, R, t, joints3d).astype(np.float32)
    else:
        out["joints2D"] = project_frames(K, R, t, joints3d).astype(np.float32)
    out["visible"] = visible[:, 0] if P == 1 else visible
    out["bbox"] = (bbox[:, 0] if P == 1 else bbox).astype(np.float32)
    if cameras is None:
        out["K"] = np.repeat(K[None].astype(np.float32), T, 0)
        out["R"] = np.repeat(R[None].astype(np.float32), T, 0)
        out["t"] = np.repeat(t[None].astype(np.float32), T, 0)
    else:
        out["K"], out["R"], out["t"] = K.astype(np.float32), R.astype(np.float32), t.astype(np.float32)
    if spec.correspondence:
        out["uv"] = out["uv"].astype(np.float32)
        out["canon"] = out["canon"].astype(np.float32)
    return out


# ---- filters over spec fields and QC statistics (`--where`, SurrealClips(where=...)) ----

_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|==|!=|=|>|<)\s*([^<>=!\s].*?)\s*$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
    "==": lambda a, b: a == b, "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
}  # fmt: skip


def clip_fields(spec: dict[str, Any], qc: dict[str, Any] | None) -> dict[str, Any]:
    """The flat fields a filter can name: the spec's scalars (camera.* as camera_*, camera_motion.* as
    camera_motion_*), `people` (how many), the clip's QC statistics, and frames_with_body as a fraction of the
    clip's frames (frames_with_body_count is the manifest's count). A spec stores issue 26's fields only when
    they are not their defaults: a static camera is camera_motion_mode "static", shutter 0, correspondence
    False."""
    fields: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            fields.update({f"{key}_{k}": v for k, v in value.items() if not isinstance(v, (dict, list))})
        elif not isinstance(value, (list, tuple)) and not (key == "camera_motion" and value is None):
            fields[key] = value
    for key, default in (("camera_motion_mode", "static"), ("shutter", 0.0), ("correspondence", False)):
        fields.setdefault(key, default)
    fields["people"] = 1 + len(spec.get("others") or [])
    qc = qc or {}
    fields.update({k: v for k, v in qc.items() if k not in ("frames_with_body", "people")})
    count, frames = qc.get("frames_with_body"), qc.get("frames") or spec.get("frame_count")
    fields["frames_with_body_count"] = count
    fields["frames_with_body"] = None if count is None or not frames else count / frames
    return fields


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any

    def __call__(self, fields: dict[str, Any]) -> bool:
        have = fields.get(self.field)
        if have is None:
            return False
        try:
            return _OPS[self.op](
                type(self.value)(have) if isinstance(self.value, float) else have, self.value
            )
        except (TypeError, ValueError):
            return False


def parse_filters(expressions: Iterable[str], known: Iterable[str]) -> list[Condition]:
    """`field OP value` (OP one of >= <= > < == = !=; several joined by `,` or ` and `) -> conditions;
    a FarmError of one sentence for anything else or an unknown field."""
    names = sorted(set(known))
    conditions = []
    for expression in expressions:
        for part in re.split(r",|\band\b", expression):
            if not part.strip():
                continue
            match = _FILTER.match(part)
            if match is None:
                raise FarmError(
                    f"filter {part.strip()!r} is not 'field OP value' with OP one of >= <= > < == !=, "
                    "for example frames_with_body>=0.9"
                )
            field, op, raw = match.groups()
            if field not in names:
                raise FarmError(
                    f"filter {part.strip()!r} names an unknown field {field!r}; known: {', '.join(names)}"
                )
            value: Any = raw.strip("'\"")
            try:
                value = float(raw)
            except ValueError:
                if op not in ("=", "==", "!="):
                    raise FarmError(
                        f"filter {part.strip()!r} compares {field} with {raw!r}, which is not a number"
                    ) from None
            conditions.append(Condition(field, op, value))
    return conditions


def _filter_fields() -> tuple[str, ...]:
    from types import UnionType
    from typing import Union, get_args, get_origin

    from pydantic import BaseModel

    spec: dict[str, Any] = {}
    for name, field in ClipSpec.model_fields.items():
        kind = field.annotation
        # a model, or a model | None (camera_motion); not a tuple of them (others)
        optional = get_origin(kind) in (Union, UnionType)
        models = [
            k
            for k in (kind, *(get_args(kind) if optional else ()))
            if isinstance(k, type) and issubclass(k, BaseModel)
        ]
        spec[name] = {k: 0 for k in models[0].model_fields} if models else 0  # a model, or a model | None
    stats = ("frames", "frames_with_body", "body_pixels_mean", "joints_in_image", "flow_mean")
    return tuple(clip_fields(spec, {k: 0 for k in stats}))


FILTER_FIELDS = _filter_fields()


def matches(conditions: list[Condition], spec: dict[str, Any], qc: dict[str, Any] | None) -> bool:
    fields = clip_fields(spec, qc)
    return all(c(fields) for c in conditions)
