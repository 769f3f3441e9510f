"""What crosses the renderer boundary: a clip as plain arrays in, its passes out, and the options."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from farm.core.spec import ClipSpec

if TYPE_CHECKING:
    from farm.core.settings import Settings
from farm.render.camera import Camera

BACKGROUND_DEPTH = 1e10


RESULT_ARRAYS = ("rgb", "alpha", "depth", "normal", "flow", "segm", "inst")
# Only for clips whose spec asks for dense correspondence (ClipSpec.correspondence); None otherwise.
CORRESPONDENCE_ARRAYS = ("uv", "canon")

# Motion blur (ClipSpec.shutter > 0, issue 26): each frame's RGB is the mean of this many renders at times
# spread evenly over the open shutter (motion_blur_offsets); every other pass is the shutter's centre, the frame
# itself. 8 keeps the steps between samples at about a pixel for the fastest limbs at the usual shutters
# (the built-in walk moves up to ~17 px a frame: 17 x 0.5 / 8 ~ 1 px at shutter 0.5), at 8 Combined-only
# renders a frame.
MOTION_BLUR_SAMPLES = 8


def motion_blur_offsets(shutter: float, samples: int = MOTION_BLUR_SAMPLES) -> np.ndarray:
    """(samples,) the blur samples' times relative to their frame, in frames: the midpoints of `samples` equal
    slices of [-shutter / 2, shutter / 2] (the shutter is centred on the frame)."""
    return shutter * ((np.arange(samples) + 0.5) / samples - 0.5)


def motion_blur_manifest(shutter: float) -> dict[str, object] | None:
    """The manifest's `motion_blur` entry of a clip rendered with `shutter`; None (no entry) without blur."""
    if shutter <= 0:
        return None
    return {
        "shutter": shutter,
        "samples": MOTION_BLUR_SAMPLES,
        "note": "RGB only: every other pass is the shutter's centre (the frame's own time, as without blur)",
    }


# How close EEVEE's passes come to Cycles' (measured by tests/blender/test_render_eevee.py, which holds them
# to these bounds). EEVEE keeps normals and the Vector pass in half floats, and where two faces tie at a pixel
# centre (coplanar or touching parts, a silhouette) it may pick the other one.
EEVEE_BOUNDS = {
    "segm_differs": 0.005,  # at most this fraction of the body's pixels has another label than Cycles'
    "depth_m": 1e-3,  # depth within this many metres of Cycles' ...
    "depth_within": 0.995,  # ... on at least this fraction of the body's pixels
    "flow_px": 0.05,  # flow within flow_px + flow_relative * |flow| of Cycles'
    "flow_relative": 2e-3,
    "normal": 1e-3,  # normals (unit length) within this of Cycles' direction: 1 - cosine
}

# What each engine's passes promise; the clip's manifest carries its engine's (`guarantees`).
_FOREGROUND = "segm > 0, alpha > 0.5 and depth < 1e10 hold at exactly the same pixels"
GUARANTEES: dict[str, dict[str, str]] = {
    "cycles": {
        "foreground": _FOREGROUND,
        "segm": "exact: the part seen at each pixel's centre",
        "depth": "exact (float32): the surface seen at each pixel's centre",
        "normal": "exact (float32 unit vectors)",
        "flow": "exact (float32): the motion of the surface point seen at each pixel's centre",
    },
    "eevee": {
        "foreground": _FOREGROUND,
        "segm": f"the part seen at each pixel's centre; where two faces tie there it may pick the other: at "
        f"most {EEVEE_BOUNDS['segm_differs']:.1%} of body pixels differ from Cycles'",
        "depth": f"float32; within {EEVEE_BOUNDS['depth_m'] * 1e3:g} mm of Cycles' on at least "
        f"{EEVEE_BOUNDS['depth_within']:.1%} of body pixels",
        "normal": f"float32 unit vectors from half floats: 1 - cosine with Cycles' within "
        f"{EEVEE_BOUNDS['normal']:g}",
        "flow": f"half-float precision: within {EEVEE_BOUNDS['flow_px']:g} px + "
        f"{EEVEE_BOUNDS['flow_relative']:.1%} of its length of Cycles'",
    },
}


def result_shapes(
    T: int, H: int, W: int, correspondence: bool = False
) -> dict[str, tuple[tuple[int, ...], type]]:
    """Each pass array of a RenderResult: (shape, dtype); `uv` and `canon` only with `correspondence`."""
    shapes: dict[str, tuple[tuple[int, ...], type]] = {
        "rgb": ((T, H, W, 3), np.uint8),
        "alpha": ((T, H, W), np.float32),
        "depth": ((T, H, W), np.float32),
        "normal": ((T, H, W, 3), np.float32),
        "flow": ((T, H, W, 2), np.float32),
        "segm": ((T, H, W), np.uint8),
        "inst": ((T, H, W), np.uint8),
    }
    if correspondence:
        shapes["uv"] = ((T, H, W, 2), np.float32)
        shapes["canon"] = ((T, H, W, 3), np.float32)
    return shapes


def create_result_files(folder: Path, T: int, H: int, W: int, correspondence: bool = False) -> None:
    """The pass arrays as zeroed .npy files in `folder`, for Blender processes to fill (each its own frames)."""
    for name, (shape, dtype) in result_shapes(T, H, W, correspondence).items():
        np.lib.format.open_memmap(folder / f"{name}.npy", "w+", dtype, shape).flush()


def open_result_files(
    folder: Path,
    T: int,
    H: int,
    W: int,
    mode: Literal["r", "r+"] = "r+",
    correspondence: bool = False,
) -> dict[str, np.memmap]:
    """The files create_result_files made, mapped for writing (Blender) or reading ("r": the maps stay readable
    after the folder is removed)."""
    arrays = {}
    for name, (shape, dtype) in result_shapes(T, H, W, correspondence).items():
        a = np.load(folder / f"{name}.npy", mmap_mode=mode)
        if a.shape != shape or a.dtype != dtype:
            raise RenderError(f"{folder / name}.npy holds {a.dtype} {a.shape}, not {np.dtype(dtype)} {shape}")
        arrays[name] = a
    return arrays


Progress = Callable[[int, int], None]  # (frames done, frames in the clip)


# Receives the clip's arrays (name -> (T, ...) array, frames [0, done) final) and `done` as frames finish.
FrameSink = Callable[[dict[str, np.ndarray], int], None]


class RenderError(RuntimeError):
    """Blender failed on a clip (crash, timeout, bad scene); the message says why. The farm marks the
    clip failed."""


@dataclass
class BodyMesh:
    """One person's mesh, motion, texture and placement, as plain arrays."""

    vertices: np.ndarray  # (T, V, 3) float32, body coordinates
    faces: np.ndarray  # (F, 3) int32
    vt: np.ndarray  # (Nvt, 2) float32 UVs
    ft: np.ndarray  # (F, 3) int32 UV index per face corner
    face_parts: np.ndarray  # (F,) uint8 part label 1..24 (the material index + 1)
    texture: np.ndarray  # (H, W, 3) uint8 sRGB
    world_from_body: np.ndarray  # (4, 4) rigid: body coordinates -> world
    # (V, 3) float32: each vertex on the person's canonical body (mean shape, zero pose and translation, the
    # model's frame), only when the spec asks for correspondence (ClipSpec.correspondence); else None
    canonical: np.ndarray | None = None


@dataclass
class RenderJob:
    """Everything Blender needs for one clip, as plain arrays. Vertices are in body coordinates (before the
    yaw); the camera carries the first person's yaw as `world_from_body`, each other person their own."""

    spec: ClipSpec
    vertices: np.ndarray  # (T, V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    vt: np.ndarray  # (Nvt, 2) float32 UVs
    ft: np.ndarray  # (F, 3) int32 UV index per face corner
    face_parts: np.ndarray  # (F,) uint8 part label 1..24 (the material index + 1)
    texture: np.ndarray  # (H, W, 3) uint8 sRGB
    # (height, width, 3) uint8 sRGB, the camera's size; a moving camera's is its background canvas
    # (farm/render/camera_motion.py background_canvas_size), warped per frame
    background: np.ndarray
    camera: Camera
    others: list[BodyMesh] = field(default_factory=list)  # the clip's other people (spec.others), in order
    canonical: np.ndarray | None = None  # (V, 3) float32, the first person's (BodyMesh.canonical)

    @property
    def frame_count(self) -> int:
        return int(self.vertices.shape[0])

    def bodies(self) -> list[BodyMesh]:
        """Every person's mesh, the first person's first; person k is instance k + 1 of the `inst` pass."""
        first = BodyMesh(
            self.vertices,
            self.faces,
            self.vt,
            self.ft,
            self.face_parts,
            self.texture,
            self.camera.world_from_body,
            self.canonical,
        )
        return [first, *self.others]


@dataclass
class RenderResult:
    """Per-frame passes, (T, H, W, ...), in the conventions of this module's docstring."""

    rgb: np.ndarray  # uint8 (T, H, W, 3), composited over the background
    alpha: np.ndarray  # float32 (T, H, W), the render's coverage before compositing
    depth: np.ndarray  # float32 (T, H, W)
    normal: np.ndarray  # float32 (T, H, W, 3)
    flow: np.ndarray  # float32 (T, H, W, 2)
    segm: np.ndarray  # uint8 (T, H, W)
    inst: np.ndarray  # uint8 (T, H, W): 0 background, k + 1 where person k is the visible surface
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "setup", "render", "read"
    software: dict[str, str] = field(default_factory=dict)  # e.g. {"blender": "5.0.1"}
    guarantees: dict[str, str] = field(default_factory=dict)  # GUARANTEES[engine]: what the passes promise
    # Only for clips whose spec asks for correspondence (ClipSpec.correspondence), else None; both flipped
    # left-right in the surreal convention like every pass, NaN on background (segm == 0):
    uv: np.ndarray | None = None  # float32 (T, H, W, 2): the texture UV (Blender's: v up) at the pixel centre
    canon: np.ndarray | None = None  # float32 (T, H, W, 3): its point on the canonical body


@dataclass(frozen=True)
class RenderOptions:
    engine: Literal["cycles", "eevee"] = "cycles"
    device: Literal["cpu", "cuda", "optix"] = "cpu"
    samples: int = 1
    threads: int = 0  # 0: all cores
    memory_limit_mb: int = 4096  # a warm process whose RSS passes this is recycled after its clip
    timeout_s: float = 1800.0  # one clip
    processes: int = 1  # Blender processes sharing each clip's frames (farm.render.client.ParallelRenderer)
    cpus: tuple[int, ...] = ()  # the CPUs one process is pinned to (set by ParallelRenderer; () = not pinned)

    @property
    def guarantees(self) -> dict[str, str]:
        """What this engine's passes promise (GUARANTEES)."""
        return dict(GUARANTEES[self.engine])

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderOptions:
        return cls(
            engine=settings.engine,
            device=settings.device,
            samples=settings.samples,
            memory_limit_mb=getattr(settings, "render_memory_limit_mb", cls.memory_limit_mb),
            # Below Celery's soft limit (90% of the clip's time limit, farm.core.celery_app), so a hung Blender is
            # stopped here, with its reason and log, before Celery interrupts the task from outside.
            timeout_s=0.8 * getattr(settings, "clip_time_limit_s", cls.timeout_s / 0.8),
            processes=render_processes(
                settings.device, settings.engine, getattr(settings, "render_processes", 0)
            ),
        )


MAX_AUTO_PROCESSES = 8


def render_processes(device: str, engine: str = "cycles", setting: int = 0) -> int:
    """How many Blender processes share a clip: `setting` if set, else for Cycles on the CPU one per CPU core
    this process may use (at most MAX_AUTO_PROCESSES), else one (a GPU; EEVEE, which renders with OpenGL).
    Blender spends most of a CPU frame in serial work (scene update, BVH build, writing the passes), so there
    processes scale where threads do not."""
    if setting > 0:
        return setting
    if device != "cpu" or engine != "cycles":
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_PROCESSES))


class Renderer(Protocol):
    def render(
        self, job: RenderJob, progress: Progress | None = None, sink: FrameSink | None = None
    ) -> RenderResult: ...

    def close(self) -> None: ...


def scratch_dir(need_bytes: int = 0) -> str | None:
    """A RAM-backed folder for transient pass files (/dev/shm) when it has room, else the default temp."""
    try:
        st = os.statvfs("/dev/shm")
        if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize > 2 * need_bytes + (256 << 20):
            return "/dev/shm"
    except OSError:
        pass
    return None
