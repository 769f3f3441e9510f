"""The renderer boundary: plain job/result types, the camera math, and the `Renderer` implementations.

Nothing here imports bpy. `BlenderProcessRenderer` runs `python -m blender.server` (the only place bpy lives)
and talks to it over a socket; `InProcessRenderer` imports the scene code in this process (benchmarks).

Two output conventions (ClipSpec.convention; the README gives both with their formulas).

"surreal" (the default): every value means what the original SURREAL's means (its generator's camera and
placement code, checked on its sample clip; ../shared/surreal-reference/README.md), because tools written for
SURREAL depend on it:
- World: metres; the body's up is -Y. It is the MoCap's Z-up frame (SMPL motion as MoSh and AMASS store it;
  the built-in Y-up motions are turned into it by R_x(+90 deg)), yawed by `zrot` about the vertical through
  the frame-0 pelvis, then turned by R_x(+90 deg). So SMPL with global_orient = R_x(90) R_z(zrot) R(pose[:3])
  and the pelvis at joints3D[:, 0] gives the body (SURREAL's `rotateBody`).
- Camera: `camDist - 1` metres from the frame-0 pelvis along +X, at pelvis height, looking along -X, static.
  World -> camera is SURREAL's R = [[0, 0, -1], [0, 1, 0], [-1, 0, 0]], a reflection (det -1), t = -R camLoc:
  the frames are mirror images of the scene, and joints2D = round((K (R X + t))[:2] / z) match them.
  Blender renders with the proper camera diag(-1, 1, 1) R and every pass is flipped left-right after.
- Pixels: no half-pixel shift (as the original's Blender camera): pixel column c spans [c, c + 1) in K's
  coordinates, so its centre is at c + 0.5.
- depth: distance from the camera centre along the pixel's ray (what Blender 2.7x's Z pass held); background
  1e10.
- normal: unit world-frame normals (Cycles' Normal pass); background 0.
- gtflow: Blender's raw Speed pass (X, Y) = motion towards the previous frame in Blender's pixel axes (y
  up): [..., 0] = x_prev - x_cur, [..., 1] = y_cur - y_prev in image pixels; frame 1 holds 0. Readers
  negate [..., 0] to get the flow from frame t-1 to t.
- pose: the MoCap (Z-up) SMPL pose without the yaw; `zrot` the yaw; dtypes as the original's.

"clean": the farm's own unmirrored convention (spec version 1 clips were rendered in it):
- World: the SMPL frame of the motion, metres, +Y up. The body's yaw `zrot` is a rotation about the vertical
  (+Y) axis through the pelvis at frame 0, so the pelvis at frame 0 stays where the motion put it.
- Camera: at pelvis height, `distance` metres from the frame-0 pelvis along world +Z, looking along -Z (so
  with zrot = 0 it faces the SMPL body's front), static over the clip. Its frame is OpenCV's: x right, y down,
  z forward. `x_cam = R @ X_world + t` with R = diag(1, -1, -1) and t = -R @ camLoc.
- Pixels: 0-based, (0, 0) is the centre of the top-left pixel, x right, y down.
  `joints2D = (K @ x_cam)[:2] / z` with K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]], f = 600 px at 320x240:
  SURREAL's K, and the Blender camera is shifted half a pixel so the image agrees with it exactly.
- depth: metres along the camera's z axis (not along the ray); background exactly 1e10.
- normal: unit surface normals in the camera frame (x right, y down, z forward, so visible surfaces have
  z < 0); background 0.
- gtflow: forward optical flow in pixels, [..., 0] = dx (right positive), [..., 1] = dy (down positive): the
  surface point seen at pixel p in frame t is at p + flow in frame t+1. The last frame of a clip has no
  successor and holds 0. From Blender's raw Vector pass (X, Y, Z, W) = (prev - cur, cur - next) with y up:
  dx = -Z, dy = +W.

Both:
- segm: 0 background, 1..24 SMPL parts (joint index + 1), the anatomical part (not swapped by the mirror).
- RGB: albedo (sRGB texture, linearised) x SH irradiance, emitted; sRGB-encoded; composited over the
  background image (never mirrored) with the render's alpha.
- SH irradiance: Ramamoorthi-Hanrahan with the clip's 9 coefficients in the order L00, L1-1, L10, L11,
  L2-2, L2-1, L20, L21, L22, evaluated on the normal in the OpenCV frame of the camera Blender renders with,
  so the "vertical" term L1-1 multiplies y (down): a negative coefficient lights the body from above, as in
  SURREAL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from farm.spec import ClipSpec

BACKGROUND_DEPTH = 1e10
RESULT_ARRAYS = ("rgb", "alpha", "depth", "normal", "flow", "segm")
SH_CONSTANTS = (0.429043, 0.511664, 0.743125, 0.886227, 0.247708)  # Ramamoorthi-Hanrahan c1..c5

# World -> OpenCV camera rotation (x right, y down, z forward) of each convention. SURREAL's is a reflection
# (det -1), which is why its frames are mirror images of the scene.
WORLD_TO_CV = {
    "surreal": np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
    "clean": np.diag([1.0, -1.0, -1.0]),
}


def intrinsics(width: int = 320, height: int = 240, focal_px: float = 600.0) -> np.ndarray:
    """SURREAL's K: the principal point at the image centre."""
    return np.array([[focal_px, 0.0, width / 2], [0.0, focal_px, height / 2], [0.0, 0.0, 1.0]])


def project_with_info(convention: str, cam_loc: np.ndarray, points: np.ndarray) -> np.ndarray:
    """What a reader of `_info.mat` does: world points (..., 3) -> pixels (..., 2) from `camLoc` and the
    convention's fixed rotation and K (`joints2D` are these, rounded in the surreal convention)."""
    R = WORLD_TO_CV[convention]
    x = (np.asarray(points, np.float64) - np.asarray(cam_loc, np.float64).reshape(3)) @ R.T @ intrinsics().T
    return x[..., :2] / x[..., 2:3]


Progress = Callable[[int, int], None]  # (frames done, frames in the clip)
# Receives the clip's arrays (name -> (T, ...) array, frames [0, done) final) and `done` as frames finish.
FrameSink = Callable[[dict[str, np.ndarray], int], None]


class RenderError(RuntimeError):
    """Blender failed on a clip (crash, timeout, bad scene); the message says why. The farm marks the
    clip failed."""


@dataclass(frozen=True)
class Camera:
    """A pinhole camera (OpenCV axes; R may be a reflection) plus the body's placement in the world."""

    K: np.ndarray  # (3, 3) intrinsics, pixels
    R: np.ndarray  # (3, 3) world -> camera rotation; det -1 in the surreal convention (mirrored frames)
    t: np.ndarray  # (3,) world -> camera translation
    world_from_body: np.ndarray  # (4, 4) rigid: the body's frame (the motion's) -> world
    width: int
    height: int
    pixel_centre: float = 0.0  # K's coordinate of pixel 0's centre: 0 (clean) or 0.5 (surreal, unshifted)

    @property
    def location(self) -> np.ndarray:
        """Camera centre in world metres (SURREAL's camLoc)."""
        return -self.R.T @ self.t

    @property
    def mirrored(self) -> bool:
        return bool(np.linalg.det(self.R) < 0)

    def body_to_world(self, points: np.ndarray) -> np.ndarray:
        m = self.world_from_body
        return points @ m[:3, :3].T + m[:3, 3]

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return points @ self.R.T + self.t

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> pixel coordinates of K (..., 2)."""
        x = self.to_camera(points) @ self.K.T
        return x[..., :2] / x[..., 2:3]

    @functools.cached_property
    def ray_lengths(self) -> np.ndarray:
        """(H, W): distance along each pixel centre's ray per metre of planar depth (computed once per clip)."""
        u = (np.arange(self.width) + self.pixel_centre - self.K[0, 2]) / self.K[0, 0]
        v = (np.arange(self.height) + self.pixel_centre - self.K[1, 2]) / self.K[1, 1]
        return np.sqrt(1.0 + u[None, :] ** 2 + v[:, None] ** 2).astype(np.float32)


def yaw_matrix(angle: float) -> np.ndarray:
    """Rotation by `angle` radians about +Y (the vertical)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# SURREAL's world is the MoCap's Z-up frame turned by this (the body's up becomes -Y).
SURREAL_FROM_ZUP = rot_x(np.pi / 2)


def zup_from_motion(motion_uri: str) -> np.ndarray:
    """The rotation taking a motion's own frame to the Z-up MoCap frame (MoSh's and AMASS's). SURREAL npz
    and AMASS files are Z-up already. The built-in motions are generated Y-up, facing +Z (SMPL's rest frame):
    they are stood up and turned to face +X, so that with zrot = 0 the body faces SURREAL's camera as it faces
    the clean convention's (the same clip shows the same view in both, mirrored)."""
    return rot_z(np.pi / 2) @ rot_x(np.pi / 2) if motion_uri.startswith("builtin:") else np.eye(3)


def stored_pose(spec: ClipSpec, poses: np.ndarray) -> np.ndarray:
    """The `pose` array the clip's convention stores, (T, 72): the motion's own pose in clean; in surreal the
    Z-up MoCap pose (the root turned by zup_from_motion; unchanged for SURREAL and AMASS files)."""
    U = zup_from_motion(spec.motion.uri)
    if spec.convention == "clean" or np.array_equal(U, np.eye(3)):
        return np.asarray(poses, np.float32)
    from scipy.spatial.transform import Rotation

    out = np.array(poses, np.float64)
    out[:, :3] = (Rotation.from_matrix(U) * Rotation.from_rotvec(out[:, :3])).as_rotvec()
    return out.astype(np.float32)


def make_camera(spec: ClipSpec, pelvis0: np.ndarray) -> Camera:
    """The clip's camera and body placement in its convention (see the module docstring)."""
    cam = spec.camera
    K = intrinsics(cam.width, cam.height, cam.focal_px)
    pelvis0 = np.asarray(pelvis0, dtype=np.float64)  # the frame-0 pelvis in the body's (motion's) frame
    world_from_body = np.eye(4)
    R = WORLD_TO_CV[spec.convention]
    if spec.convention == "clean":
        world_from_body[:3, :3] = yaw_matrix(spec.zrot)
        world_from_body[:3, 3] = pelvis0 - world_from_body[:3, :3] @ pelvis0
        location = pelvis0 + np.array([0.0, 0.0, cam.distance])
        pixel_centre = 0.0
    else:
        # X_world = S (Rz (U X - c0) + c0), with U the motion -> Z-up turn and c0 the Z-up frame-0 pelvis.
        U, S, Rz = zup_from_motion(spec.motion.uri), SURREAL_FROM_ZUP, rot_z(spec.zrot)
        c0 = U @ pelvis0
        world_from_body[:3, :3] = S @ Rz @ U
        world_from_body[:3, 3] = S @ (c0 - Rz @ c0)
        # The original placed its camera about camDist - 1 m from the frame-0 pelvis (its sample: 6.69 m
        # for camDist 7.69), at pelvis height, on the +X side.
        location = S @ c0 + np.array([cam.distance - 1.0, 0.0, 0.0])
        pixel_centre = 0.5
    return Camera(K, R, -R @ location, world_from_body, cam.width, cam.height, pixel_centre)


@dataclass
class RenderJob:
    """Everything Blender needs for one clip, as plain arrays. Vertices are in body coordinates (before the
    yaw); the camera carries the yaw as `world_from_body`."""

    spec: ClipSpec
    vertices: np.ndarray  # (T, V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    vt: np.ndarray  # (Nvt, 2) float32 UVs
    ft: np.ndarray  # (F, 3) int32 UV index per face corner
    face_parts: np.ndarray  # (F,) uint8 part label 1..24 (the material index + 1)
    texture: np.ndarray  # (H, W, 3) uint8 sRGB
    background: np.ndarray  # (height, width, 3) uint8 sRGB, the camera's size
    camera: Camera

    @property
    def frame_count(self) -> int:
        return int(self.vertices.shape[0])


@dataclass
class RenderResult:
    """Per-frame passes, (T, H, W, ...), in the conventions of this module's docstring."""

    rgb: np.ndarray  # uint8 (T, H, W, 3), composited over the background
    alpha: np.ndarray  # float32 (T, H, W), the render's coverage before compositing
    depth: np.ndarray  # float32 (T, H, W)
    normal: np.ndarray  # float32 (T, H, W, 3)
    flow: np.ndarray  # float32 (T, H, W, 2)
    segm: np.ndarray  # uint8 (T, H, W)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "setup", "render", "read"
    software: dict[str, str] = field(default_factory=dict)  # e.g. {"blender": "5.0.1"}


@dataclass(frozen=True)
class RenderOptions:
    engine: Literal["cycles", "eevee"] = "cycles"
    device: Literal["cpu", "cuda", "optix"] = "cpu"
    samples: int = 1
    threads: int = 0  # 0: all cores
    memory_limit_mb: int = 4096  # a warm process whose RSS passes this is recycled after its clip
    timeout_s: float = 1800.0  # one clip

    @classmethod
    def from_settings(cls, settings: Any) -> RenderOptions:
        return cls(
            engine=settings.engine,
            device=settings.device,
            samples=settings.samples,
            memory_limit_mb=getattr(settings, "render_memory_limit_mb", cls.memory_limit_mb),
            # Below Celery's soft limit (90% of the clip's time limit, farm.celery_app), so a hung Blender is
            # stopped here, with its reason and log, before Celery interrupts the task from outside.
            timeout_s=0.8 * getattr(settings, "clip_time_limit_s", cls.timeout_s / 0.8),
        )


def face_labels(vertex_labels: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """A face's part is the label of at least two of its corners, else its first corner's."""
    corner = np.asarray(vertex_labels)[faces]
    return np.where(corner[:, 1] == corner[:, 2], corner[:, 1], corner[:, 0]).astype(np.uint8)


@dataclass
class PreparedClip:
    job: RenderJob
    poses: np.ndarray  # (T, 72) SMPL axis-angle, without the yaw
    joints: np.ndarray  # (T, 24, 3) world metres (with the yaw)


def prepare_clip(spec: ClipSpec, frames: int | None = None, settings: Any = None) -> PreparedClip:
    """Motion, body evaluation, assets and camera for a clip: everything before Blender.

    `frames` renders only the clip's first N frames; the job's spec then says frame_count = N.
    """
    from farm.backgrounds import load_background
    from farm.body import load_body_model
    from farm.motion import load_clip_motion
    from farm.textures import load_texture

    if frames is not None:
        spec = spec.model_copy(update={"frame_count": max(1, min(frames, spec.frame_count))})
    poses, trans = load_clip_motion(spec)
    model = load_body_model(spec.body_model, spec.gender, settings)
    body = model.evaluate(poses, np.asarray(spec.shape, np.float32), trans)
    camera = make_camera(spec, body.joints[0, 0])
    faces = model.faces.astype(np.int32)
    job = RenderJob(
        spec=spec,
        vertices=body.vertices,
        faces=faces,
        vt=model.vt.astype(np.float32),
        ft=model.ft.astype(np.int32),
        face_parts=face_labels(model.part_labels, faces),
        texture=load_texture(spec.texture, settings=settings),
        background=load_background(spec.background, spec.camera.width, spec.camera.height),
        camera=camera,
    )
    return PreparedClip(job, poses, camera.body_to_world(body.joints).astype(np.float32))


class Renderer(Protocol):
    def render(
        self, job: RenderJob, progress: Progress | None = None, sink: FrameSink | None = None
    ) -> RenderResult: ...

    def close(self) -> None: ...


class InProcessRenderer:
    """Imports bpy into this process (once) and renders there: for benchmarks and single-shot tools."""

    def __init__(self, options: RenderOptions | None = None) -> None:
        from blender.scene import SceneRenderer  # bpy is imported here, not at module import

        self.options = options or RenderOptions()
        self._scene = SceneRenderer(self.options)

    def render(
        self, job: RenderJob, progress: Progress | None = None, sink: FrameSink | None = None
    ) -> RenderResult:
        result = self._scene.render(job, progress)
        if sink:
            sink({k: getattr(result, k) for k in RESULT_ARRAYS}, job.frame_count)
        return result

    def close(self) -> None:
        self._scene.close()


def scratch_dir(need_bytes: int = 0) -> str | None:
    """A RAM-backed folder for transient pass files (/dev/shm) when it has room, else the default temp."""
    try:
        st = os.statvfs("/dev/shm")
        if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize > 2 * need_bytes + (256 << 20):
            return "/dev/shm"
    except OSError:
        pass
    return None


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


log = logging.getLogger(__name__)

SERVER_COMMAND = (sys.executable, "-m", "blender.server")  # the child; the socket's fd is its last argument


class _JobFailed(RenderError):
    """The child reported that a job failed and is ready for the next one, so it stays warm."""


class BlenderProcessRenderer:
    """A warm Blender: one `python -m blender.server` child that renders clip after clip.

    It is started on first use, restarted after a clip when its memory passes `memory_limit_mb` (Blender
    leaks over long runs), and restarted after it dies. A crash or timeout raises RenderError with the reason
    and the tail of Blender's log.

    Every request carries a fresh job id, and a reply tagged with another job's id is discarded: the result of
    one clip is never taken for another's. Anything that interrupts a call other than the child's own "error"
    reply (the timeout, Celery's soft time limit, a failing sink, KeyboardInterrupt) kills the child with
    SIGKILL, which also ends a stopped process, so the next clip starts a fresh one that holds nothing of the
    old clip. `command` is the child's command line without the socket's fd (tests pass a stand-in server).
    """

    def __init__(self, options: RenderOptions | None = None, command: Sequence[str] = SERVER_COMMAND) -> None:
        self.options = options or RenderOptions()
        self.command = list(command)
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._log: Any = None
        self._sender: threading.Thread | None = None  # the request being written, while it is
        self.restarts = 0  # processes started, for tests and metrics

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def rss_mb(self) -> float:
        return _rss_mb(self._proc.pid) if self._proc else 0.0

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop()
        parent, child = socket.socketpair()
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            [*self.command, str(child.fileno())],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
        )
        child.close()
        self._conn = Connection(parent.detach())
        self.restarts += 1
        with self._interruption_ends_the_child():
            self._call("init", self.options)

    @contextlib.contextmanager
    def _interruption_ends_the_child(self) -> Iterator[None]:
        """A call that ends other than by the child's reply may leave the child working on it (or stopped):
        kill it, so that nothing it still sends can reach the next job."""
        try:
            yield
        except _JobFailed:
            raise
        except BaseException:
            self._kill()
            raise

    def _log_tail(self, lines: int = 15) -> str:
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - 8192))
        text = self._log.read().decode(errors="replace")
        return "\n".join(line for line in text.splitlines()[-lines:] if not line.startswith("Fra:"))

    def _died(self, what: str, kill: bool = False) -> RenderError:
        """The child is gone or is being killed (`kill`): its exit code and last output, for the error."""
        proc = self._proc
        code = None
        if proc is not None:
            if kill:
                proc.kill()
            try:
                code = proc.wait(timeout=5)  # a crashing child is exiting: its own code says more than -9
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        tail = self._log_tail()
        self._kill()
        return RenderError(f"Blender {what} (exit code {code}); its last output:\n{tail}")

    def _call(self, kind: str, payload: Any, progress: Progress | None = None) -> Any:
        assert self._conn is not None and self._proc is not None
        job = uuid.uuid4().hex
        deadline = time.monotonic() + self.options.timeout_s
        self._send((kind, job, payload), deadline)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out()
            try:
                if not self._conn.poll(min(remaining, 1.0)):
                    if self._proc.poll() is not None:
                        raise self._died("died while rendering")
                    continue
                message = self._conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                raise self._died("died while rendering") from None
            if not (isinstance(message, tuple) and len(message) == 3):
                raise self._died(f"sent a reply outside the protocol ({type(message).__name__})", kill=True)
            tag, of_job, body = message
            if of_job != job:
                log.warning("discarded a %r reply of job %s while waiting for job %s", tag, of_job, job)
                continue
            if tag == "progress":
                if progress:
                    progress(*body)
            elif tag == "error":
                raise _JobFailed(body)
            else:
                return body

    def _send(self, message: tuple[str, str, Any], deadline: float) -> None:
        """Send a request, giving up at `deadline`: a job is larger than the socket's buffer, and a stopped
        child reads nothing, so a plain send could wait forever. The write runs in a thread, which ends
        with an error once the child is killed."""
        conn = self._conn
        assert conn is not None
        failed: list[BaseException] = []

        def send() -> None:
            try:
                conn.send(message)
            except BaseException as e:
                failed.append(e)

        self._sender = threading.Thread(target=send, name="blender-request", daemon=True)
        self._sender.start()
        self._sender.join(max(0.0, deadline - time.monotonic()))
        if self._sender.is_alive():
            raise self._timed_out()
        self._sender = None
        if failed:
            raise self._died(f"could not be reached ({failed[0]})")

    def _timed_out(self) -> RenderError:
        return self._died(
            f"took longer than {self.options.timeout_s:.0f} s on one clip and was killed", kill=True
        )

    def render(
        self, job: RenderJob, progress: Progress | None = None, sink: FrameSink | None = None
    ) -> RenderResult:
        """Render a clip. `sink` sees each frame as soon as it is decoded (the arrays are files the child
        writes and this process maps), so output can be written while Blender renders."""
        self.start()
        T, H, W = job.frame_count, job.camera.height, job.camera.width
        scratch = scratch_dir(T * H * W * 32)  # 32 bytes of passes per pixel
        with (
            tempfile.TemporaryDirectory(prefix="surreal-passes-", dir=scratch) as out_dir,
            self._interruption_ends_the_child(),  # inside: the child is gone before its folder is removed
        ):
            mapped: dict[str, np.ndarray] = {}

            def on_progress(done: int, total: int) -> None:
                if progress:
                    progress(done, total)
                if sink:
                    if not mapped:
                        mapped.update(
                            {k: np.load(Path(out_dir) / f"{k}.npy", mmap_mode="r") for k in RESULT_ARRAYS}
                        )
                    sink(mapped, done)

            result: RenderResult = self._call("render", (job, out_dir), on_progress)
            # Map the .npy files the child wrote; they stay readable after the folder is removed.
            arrays = {k: np.load(Path(out_dir) / f"{k}.npy", mmap_mode="r") for k in RESULT_ARRAYS}
        if self.rss_mb() > self.options.memory_limit_mb:
            self._stop()  # recycled; the next clip starts a fresh process
        return dataclasses.replace(result, **arrays)

    def _stop(self) -> None:
        """Ask a healthy child to quit (waiting a little), then forget it."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(("quit", None, None))
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        self._kill()

    def _kill(self) -> None:
        """End the child now (SIGKILL ends a stopped process too), reap it and forget it."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._sender is not None:  # a request still being written fails now that its reader is gone
            self._sender.join(10)
            unfinished, self._sender = self._sender.is_alive(), None
            if unfinished:  # never seen; its socket is left open rather than closed under the writer
                log.warning("a request to Blender is still being written; its socket stays open")
                self._conn = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> BlenderProcessRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sh_weights(light: tuple[float, ...] | np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Fold the 9 SH coefficients and c1..c5 into E(n) = a0 + a.n + b.(n*n) + d.(xy, yz, zx).

    Ramamoorthi-Hanrahan: E = c1 L22 (x^2 - y^2) + c3 L20 z^2 + c4 L00 - c5 L20
                              + 2 c1 (L2-2 xy + L21 xz + L2-1 yz) + 2 c2 (L11 x + L1-1 y + L10 z).
    """
    L = np.asarray(light, dtype=np.float64)
    c1, c2, c3, c4, c5 = SH_CONSTANTS
    a0 = c4 * L[0] - c5 * L[6]
    a = 2 * c2 * np.array([L[3], L[1], L[2]])
    b = np.array([c1 * L[8], -c1 * L[8], c3 * L[6]])
    d = 2 * c1 * np.array([L[4], L[5], L[7]])
    return float(a0), a, b, d


def sh_irradiance(light: tuple[float, ...] | np.ndarray, normals: np.ndarray) -> np.ndarray:
    """The same irradiance in numpy, for tests and checks: normals (..., 3) in the camera frame."""
    a0, a, b, d = sh_weights(light)
    n = np.asarray(normals, dtype=np.float64)
    swz = n[..., [1, 2, 0]]
    return a0 + n @ a + (n * n) @ b + (n * swz) @ d
