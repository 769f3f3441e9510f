"""A camera that moves over a clip (issue 26): follow, handheld shake and zoom. numpy only.

The camera's centre stays where the static camera stands (camLoc): over SURREAL's flat background photo a
camera may only turn and zoom, or the photo would stop being a consistent picture. Frame t's camera is

    R_t = D_t R_0,  t_t = -R_t camLoc,  K_t = K_0 with the focal length f_0 z_t,

with R_0, K_0 the static camera's (frame 0 is exactly SURREAL's camera) and D_t a proper rotation in the
frame-0 camera's axes (x right, y down, z forward; in the surreal convention those of the mirrored image):
D_t = R_z(roll_t) R_x(tilt_t) R_y(-pan_t), so a positive pan turns the view to the right, a positive tilt down.

- follow: pan and tilt chase the angles at which the first person's pelvis is seen, relative to frame 0,
  through a first-order lag (an operator's, time constant `lag_s`), and stop where the view would leave the
  background (BACKGROUND_MARGIN).
- handheld: each of pan, tilt and roll adds a sum of three sinusoids around `shake_hz` with random phases,
  scaled to `shake_deg` RMS and shifted to 0 at frame 0.
- zoom: z_t goes smoothly from 1 to `zoom` over a full clip's time (CLIP_LENGTH frames), so a clip's first
  frames are the same however many of them are rendered.

The background photo lies at infinity: a direction seen at frame-0 pixel p0 is seen at frame t at
p_t ~ H_t p0 with H_t = K_t D_t K_0^-1 (pixel coordinates of K). It is loaded BACKGROUND_MARGIN times the
image's size, the frame-0 view being its centre, and each frame samples it through H_t^-1 (bilinear).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from farm.core.spec import CLIP_LENGTH, CameraMotion

BACKGROUND_MARGIN = 1.6  # the background canvas's size over the image's, per side
SHAKE_PARTIALS = (0.55, 1.0, 1.7)  # the shake's frequencies over shake_hz (then each jittered)


def _rx(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def turn(pan: np.ndarray, tilt: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """D = R_z(roll) R_x(tilt) R_y(-pan), (..., 3, 3)."""
    return (
        _rz(np.asarray(roll, np.float64))
        @ _rx(np.asarray(tilt, np.float64))
        @ _ry(-np.asarray(pan, np.float64))
    )


@dataclass(frozen=True)
class CameraPath:
    """A clip's moving camera: its frame-0 camera and, per frame, the turn D_t and the zoom z_t. `at` gives the
    camera at any time in frames (fractions too: motion blur's samples)."""

    motion: CameraMotion
    K0: np.ndarray  # (3, 3) frame 0's (the static camera's) intrinsics
    R0: np.ndarray  # (3, 3) frame 0's rotation (a reflection in the surreal convention)
    location: np.ndarray  # (3,) the camera centre, fixed
    follow: np.ndarray  # (T, 2) follow's pan and tilt per frame, radians
    fps: float

    @property
    def frames(self) -> int:
        return len(self.follow)

    def angles(self, time: np.ndarray) -> np.ndarray:
        """(N, 3) pan, tilt, roll at `time` (N,) in frames: follow interpolated between frames, shake exact."""
        time = np.asarray(time, np.float64)
        frames = np.arange(self.frames)
        out = np.zeros((len(time), 3))
        out[:, 0] = np.interp(time, frames, self.follow[:, 0])
        out[:, 1] = np.interp(time, frames, self.follow[:, 1])
        if self.motion.has("handheld"):
            out += shake(self.motion, time / self.fps) - shake(self.motion, np.zeros(1))
        return out

    def zoom(self, time: np.ndarray) -> np.ndarray:
        """(N,) focal length over frame 0's at `time` in frames."""
        if not self.motion.has("zoom"):
            return np.ones(len(np.atleast_1d(time)))
        x = np.clip(np.asarray(time, np.float64) / (CLIP_LENGTH - 1), 0.0, 1.0)
        return self.motion.zoom ** (x * x * (3.0 - 2.0 * x))  # smoothstep: no jump in speed at either end

    def at(self, time: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(K (N, 3, 3), R (N, 3, 3)) at `time` in frames."""
        time = np.atleast_1d(np.asarray(time, np.float64))
        a = self.angles(time)
        R = turn(a[:, 0], a[:, 1], a[:, 2]) @ self.R0
        K = np.repeat(self.K0[None], len(time), 0)
        K[:, 0, 0] *= self.zoom(time)
        K[:, 1, 1] *= self.zoom(time)
        return K, R

    def homography(self, time: float) -> np.ndarray:
        """(3, 3) H with frame-time pixel ~ H @ frame-0 pixel, for directions at infinity (the background)."""
        K, R = self.at(time)
        return K[0] @ R[0] @ self.R0.T @ np.linalg.inv(self.K0)


def shake(motion: CameraMotion, seconds: np.ndarray) -> np.ndarray:
    """(N, 3) handheld pan, tilt and roll at `seconds`, radians: per axis three sinusoids (frequencies around
    SHAKE_PARTIALS x shake_hz, phases and weights from shake_seed) scaled to shake_deg RMS."""
    rng = np.random.default_rng(motion.shake_seed)
    freq = motion.shake_hz * np.asarray(SHAKE_PARTIALS) * rng.uniform(0.85, 1.15, (3, 3))
    phase = rng.uniform(0.0, 2.0 * np.pi, (3, 3))
    weight = rng.uniform(0.5, 1.0, (3, 3)) / np.asarray(SHAKE_PARTIALS)  # slower sways are larger
    weight *= np.radians(motion.shake_deg) * np.sqrt(2.0) / np.linalg.norm(weight, axis=1, keepdims=True)
    weight[2] *= 0.5  # hands roll a camera less than they pan or tilt it
    t = np.asarray(seconds, np.float64)[:, None, None]
    return (weight * np.sin(2.0 * np.pi * freq * t + phase)).sum(-1)


def follow_angles(
    motion: CameraMotion, K0: np.ndarray, R0: np.ndarray, location: np.ndarray, pelvis: np.ndarray, fps: float,
    width: int, height: int,
) -> np.ndarray:  # fmt: skip
    """(T, 2) pan and tilt that follow `pelvis` (T, 3, world) with the operator's lag, 0 at frame 0, limited so
    the view (at its widest zoom) stays on the background canvas."""
    T = len(pelvis)
    out = np.zeros((T, 2))
    if not motion.has("follow"):
        return out
    d = (np.asarray(pelvis, np.float64) - location) @ R0.T  # frame-0 camera axes
    want = np.stack([np.arctan2(d[:, 0], d[:, 2]), np.arctan2(d[:, 1], np.hypot(d[:, 0], d[:, 2]))], -1)
    want -= want[0]
    gain = 1.0 - np.exp(-1.0 / (fps * max(motion.lag_s, 1e-3)))
    for t in range(1, T):
        out[t] = out[t - 1] + gain * (want[t] - out[t - 1])
    widest = min(1.0, motion.zoom) if motion.has("zoom") else 1.0
    f = K0[0, 0]
    limit = np.array(
        [
            np.arctan(BACKGROUND_MARGIN * width / 2 / f) - np.arctan(width / 2 / (f * widest)),
            np.arctan(BACKGROUND_MARGIN * height / 2 / f) - np.arctan(height / 2 / (f * widest)),
        ]
    )
    headroom = np.radians(3 * motion.shake_deg) if motion.has("handheld") else 0.0
    limit = np.maximum(limit - headroom, 0.0)
    return np.clip(out, -limit, limit)


def background_canvas_size(width: int, height: int) -> tuple[int, int]:
    """The background's (width, height) for a moving camera: BACKGROUND_MARGIN times the image's, same parity."""
    return (
        width + 2 * round((BACKGROUND_MARGIN - 1) * width / 2),
        height + 2 * round((BACKGROUND_MARGIN - 1) * height / 2),
    )


@functools.cache
def pixel_grid(width: int, height: int, pixel_centre: float) -> np.ndarray:
    """(H, W, 3) homogeneous K coordinates of every pixel centre (made once per size; read-only)."""
    u, v = np.meshgrid(np.arange(width) + pixel_centre, np.arange(height) + pixel_centre)
    grid = np.stack([u, v, np.ones_like(u)], -1)
    grid.flags.writeable = False
    return grid


def warp_background(
    canvas: np.ndarray, H: np.ndarray, width: int, height: int, pixel_centre: float
) -> np.ndarray:  # fmt: skip
    """Frame pixels (height, width, C) float32 of the canvas (a frame-0 view extended BACKGROUND_MARGIN times, its
    centre the frame-0 image) seen through the homography H (frame-0 -> frame pixels); bilinear, edges held."""
    ch, cw = canvas.shape[:2]
    p0 = pixel_grid(width, height, pixel_centre) @ np.linalg.inv(H).T
    # canvas column of a frame-0 K coordinate: the frame-0 image's pixel centres sit at c + pixel_centre
    x = np.clip(p0[..., 0] / p0[..., 2] - pixel_centre + (cw - width) / 2, 0.0, cw - 1.0)
    y = np.clip(p0[..., 1] / p0[..., 2] - pixel_centre + (ch - height) / 2, 0.0, ch - 1.0)
    x0 = np.minimum(x.astype(np.int64), cw - 2)  # floor: x >= 0
    y0 = np.minimum(y.astype(np.int64), ch - 2)
    fx, fy = (x - x0).astype(np.float32)[..., None], (y - y0).astype(np.float32)[..., None]
    flat = np.asarray(canvas, np.float32).reshape(ch * cw, -1)  # one gather per corner of the flat canvas
    i = y0 * cw + x0
    top = flat[i] * (1 - fx) + flat[i + 1] * fx
    bottom = flat[i + cw] * (1 - fx) + flat[i + cw + 1] * fx
    return top * (1 - fy) + bottom * fy


def background_flow(
    path: CameraPath, t: int, convention: str, width: int, height: int, pixel_centre: float
) -> np.ndarray:
    """(H, W, 2) float32 flow of the background at frame t in the convention's sign (farm/render/__init__.py):
    surreal: towards the previous frame as (x_prev - x, y - y_prev), 0 at frame 0; clean: forward (x_next - x,
    y_next - y), 0 at the last frame."""
    surreal = convention == "surreal"
    other = t - 1 if surreal else t + 1
    if other < 0 or other >= path.frames:
        return np.zeros((height, width, 2), np.float32)
    to_other = path.homography(other) @ np.linalg.inv(path.homography(t))
    p = pixel_grid(width, height, pixel_centre)
    q = p @ to_other.T
    d = q[..., :2] / q[..., 2:] - p[..., :2]
    if surreal:
        d[..., 1] = -d[..., 1]
    return d.astype(np.float32)
