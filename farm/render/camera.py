"""The camera of each convention (see farm/render/__init__.py): placement, rotation, intrinsics, projection."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from farm.core.spec import ClipSpec
from farm.render.camera_motion import CameraPath, follow_angles

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
    path: CameraPath | None = None  # a moving camera's frames (K, R above are frame 0's); None: static

    def at(self, t: float) -> Camera:
        """The camera at time t in frames, fractions too (static: this one)."""
        if self.path is None:
            return self
        K, R = self.path.at(t)
        return replace(self, K=K[0], R=R[0], t=-R[0] @ self.location, path=None)

    def frames(self, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K (T, 3, 3), R (T, 3, 3), t (T, 3)) of frames 0..T-1."""
        if self.path is None:
            return np.repeat(self.K[None], T, 0), np.repeat(self.R[None], T, 0), np.repeat(self.t[None], T, 0)
        K, R = self.path.at(np.arange(T))
        return K, R, -R @ self.location

    def to_camera_frames(self, points: np.ndarray) -> np.ndarray:
        """Points (..., T, J, 3), frame t's through frame t's camera (static: to_camera)."""
        if self.path is None:
            return self.to_camera(points)
        _, R, t = self.frames(points.shape[-3])
        return to_camera_frames(R, t, points)

    def project_frames(self, points: np.ndarray) -> np.ndarray:
        """Points (..., T, J, 3) -> pixels (..., T, J, 2), frame t's through frame t's camera (static: project)."""
        if self.path is None:
            return self.project(points)
        return project_frames(*self.frames(points.shape[-3]), points)

    @property
    def location(self) -> np.ndarray:
        """Camera centre in world metres (SURREAL's camLoc)."""
        return -self.R.T @ self.t

    @property
    def mirrored(self) -> bool:
        return bool(np.linalg.det(self.R) < 0)

    def body_to_world(self, points: np.ndarray) -> np.ndarray:
        return apply_rigid(self.world_from_body, points)

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


def to_camera_frames(R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """World points (..., T, J, 3), frame t's into frame t's camera: R (T, 3, 3), t (T, 3)."""
    return np.einsum("tij,...tkj->...tki", R, np.asarray(points, np.float64)) + t[:, None, :]


def project_frames(K: np.ndarray, R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """World points (..., T, J, 3) through frame t's camera (K, R (T, 3, 3), t (T, 3): a moving camera's
    frames, or `_info.mat`'s camK, camR, camT) -> pixels (..., T, J, 2)."""
    x = np.einsum("tij,...tkj->...tki", K, to_camera_frames(R, t, points))
    return x[..., :2] / x[..., 2:3]


def apply_rigid(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 3) through the rigid (4, 4) transform `m`."""
    return points @ m[:3, :3].T + m[:3, 3]


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


def stored_pose(convention: str, motion_uri: str, poses: np.ndarray) -> np.ndarray:
    """The `pose` array a convention stores for a person, (T, 72): the motion's own pose in clean; in surreal
    the Z-up MoCap pose (the root turned by zup_from_motion; unchanged for SURREAL and AMASS files)."""
    U = zup_from_motion(motion_uri)
    if convention == "clean" or np.array_equal(U, np.eye(3)):
        return np.asarray(poses, np.float32)
    from scipy.spatial.transform import Rotation

    out = np.array(poses, np.float64)
    out[:, :3] = (Rotation.from_matrix(U) * Rotation.from_rotvec(out[:, :3])).as_rotvec()
    return out.astype(np.float32)


def world_from_body(convention: str, motion_uri: str, zrot: float, pelvis0: np.ndarray) -> np.ndarray:
    """(4, 4) rigid: a person's body (motion) frame -> world, turned by their yaw about their frame-0 pelvis
    (`pelvis0`, in the body's frame), which stays where the motion puts it."""
    pelvis0 = np.asarray(pelvis0, dtype=np.float64)
    m = np.eye(4)
    if convention == "clean":
        m[:3, :3] = yaw_matrix(zrot)
        m[:3, 3] = pelvis0 - m[:3, :3] @ pelvis0
    else:
        # X_world = S (Rz (U X - c0) + c0), with U the motion -> Z-up turn and c0 the Z-up frame-0 pelvis.
        U, S, Rz = zup_from_motion(motion_uri), SURREAL_FROM_ZUP, rot_z(zrot)
        c0 = U @ pelvis0
        m[:3, :3] = S @ Rz @ U
        m[:3, 3] = S @ (c0 - Rz @ c0)
    return m


def with_motion(camera: Camera, spec: ClipSpec, pelvis: np.ndarray) -> Camera:
    """The camera moving as spec.camera_motion says (farm/render/camera_motion.py), following `pelvis` (T, 3),
    the first person's pelvis in world metres; a static spec's camera as it is."""
    motion = spec.camera_motion
    if motion is None:
        return camera
    follow = follow_angles(
        motion, camera.K, camera.R, camera.location, pelvis, spec.fps, camera.width, camera.height
    )
    return replace(camera, path=CameraPath(motion, camera.K, camera.R, camera.location, follow, spec.fps))


def make_camera(spec: ClipSpec, pelvis0: np.ndarray) -> Camera:
    """The clip's camera and first person's placement in its convention (see the module docstring)."""
    cam = spec.camera
    K = intrinsics(cam.width, cam.height, cam.focal_px)
    pelvis0 = np.asarray(pelvis0, dtype=np.float64)  # the frame-0 pelvis in the body's (motion's) frame
    body = world_from_body(spec.convention, spec.motion.uri, spec.zrot, pelvis0)
    R = WORLD_TO_CV[spec.convention]
    if spec.convention == "clean":
        location = pelvis0 + np.array([0.0, 0.0, cam.distance])
        pixel_centre = 0.0
    else:
        # The original placed its camera about camDist - 1 m from the frame-0 pelvis (its sample: 6.69 m
        # for camDist 7.69), at pelvis height, on the +X side.
        pelvis_world = SURREAL_FROM_ZUP @ (
            zup_from_motion(spec.motion.uri) @ pelvis0
        )  # the yaw keeps it here
        location = pelvis_world + np.array([cam.distance - 1.0, 0.0, 0.0])
        pixel_centre = 0.5
    return Camera(K, R, -R @ location, body, cam.width, cam.height, pixel_centre)
