"""Camera math, SH irradiance and pass conversion: fast, no Blender."""

from __future__ import annotations

import numpy as np

from blender.passes import convert_frame, linear_to_srgb, linear_to_srgb8
from farm.core.spec import CameraSpec, ClipSpec, MotionRef
from farm.render.camera import WORLD_TO_CV, Camera, make_camera, yaw_matrix
from farm.render.lighting import sh_irradiance
from farm.render.prepare import face_labels


def spec(**kw) -> ClipSpec:
    d = dict(
        name="a_c0001", catalog="cmu", sequence="a", split="train", run=0, clip_index=0, stride=50,
        frame_start=0, frame_count=10, motion=MotionRef(uri="builtin:a", pose_key="p", trans_key="t", rate=120,
        frames=40), seed=0, body_model="free", gender="female", shape=(0.0,) * 10, shape_source="x",
        texture="t", background="b", light=(0.5,) + (0.0,) * 8, camera=CameraSpec(distance=8.0), zrot=0.0,
    )  # fmt: skip
    d.update(kw)
    return ClipSpec(**d)


def test_camera_looks_at_the_frame0_pelvis_from_its_distance():
    pelvis = np.array([0.3, 0.95, -1.2])
    cam = make_camera(spec(zrot=1.1, camera=CameraSpec(distance=7.3), convention="clean"), pelvis)
    assert np.allclose(cam.K, [[600, 0, 160], [0, 600, 120], [0, 0, 1]])
    assert np.allclose(cam.project(pelvis), [160, 120])
    assert np.isclose(np.linalg.norm(cam.location - pelvis), 7.3) and np.isclose(cam.location[1], pelvis[1])
    assert np.allclose(cam.body_to_world(pelvis), pelvis)  # the yaw turns about the frame-0 pelvis
    # a point above the pelvis is higher in the image (smaller y); one to +X is to the right
    assert cam.project(pelvis + [0, 0.5, 0])[1] < 120 and cam.project(pelvis + [0.5, 0, 0])[0] > 160
    assert np.isclose(cam.to_camera(pelvis)[2], 7.3)  # depth along the optical axis


def test_surreal_camera_is_the_originals():
    pelvis = np.array([0.3, 0.95, -1.2])  # in a built-in motion's frame (Y up)
    cam = make_camera(spec(zrot=1.1, camera=CameraSpec(distance=7.3)), pelvis)
    assert cam.mirrored and np.allclose(cam.R, [[0, 0, -1], [0, 1, 0], [-1, 0, 0]])
    assert np.isclose(np.linalg.det(cam.world_from_body[:3, :3]), 1.0)  # the body itself is not mirrored
    p0 = cam.body_to_world(pelvis)
    assert np.allclose(cam.location - p0, [6.3, 0, 0])  # camDist - 1 along +X, at pelvis height
    assert np.allclose(cam.project(p0), [160, 120])
    up = cam.body_to_world(pelvis + [0, 0.5, 0]) - p0
    assert np.allclose(up, [0, -0.5, 0])  # the body's up is world -Y ...
    assert cam.project(p0 + up)[1] < 120  # ... and up in the image
    # With zrot = 0 a built-in body (facing +Z in its own frame) faces the camera, as in the clean convention.
    front = make_camera(spec(zrot=0.0), pelvis).world_from_body[:3, :3] @ [0, 0, 1]
    assert np.allclose(front, [1, 0, 0])


def test_yaw_turns_about_vertical():
    R = yaw_matrix(np.pi / 2)
    assert np.allclose(R @ [0, 0, 1], [1, 0, 0]) and np.allclose(R @ [0, 1, 0], [0, 1, 0])


def test_sh_irradiance_matches_ramamoorthi_hanrahan():
    rng = np.random.default_rng(3)
    L = rng.uniform(-0.7, 0.7, 9)
    n = rng.normal(size=(50, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    x, y, z = n.T
    c1, c2, c3, c4, c5 = 0.429043, 0.511664, 0.743125, 0.886227, 0.247708
    expected = (
        c1 * L[8] * (x**2 - y**2) + c3 * L[6] * z**2 + c4 * L[0] - c5 * L[6]
        + 2 * c1 * (L[4] * x * y + L[7] * x * z + L[5] * y * z) + 2 * c2 * (L[3] * x + L[1] * y + L[2] * z)
    )  # fmt: skip
    assert np.allclose(sh_irradiance(L, n), expected)
    # a negative "vertical" coefficient lights normals pointing up (camera y is down)
    up, down = sh_irradiance([0, -0.5] + [0] * 7, np.array([[0, -1.0, 0], [0, 1.0, 0]]))
    assert up > down


def test_convert_frame_flow_sign_normals_and_compositing():
    h, w = 4, 5
    raw = {f"ViewLayer.{k}": np.zeros((h, w), np.float32) for k in (
        "Combined.R", "Combined.G", "Combined.B", "Combined.A", "Depth.Z", "Normal.X", "Normal.Y", "Normal.Z",
        "Vector.X", "Vector.Y", "Vector.Z", "Vector.W", "Material Index.X", "Object Index.X")}  # fmt: skip
    raw["ViewLayer.Depth.Z"][:] = 1e10
    raw["ViewLayer.Material Index.X"][1, 2] = 7
    raw["ViewLayer.Object Index.X"][1, 2] = 1
    raw["ViewLayer.Combined.A"][1, 2] = 1
    raw["ViewLayer.Combined.R"][1, 2] = 1
    raw["ViewLayer.Depth.Z"][1, 2] = 3.0
    raw["ViewLayer.Normal.Z"][1, 2] = 1.0  # towards a camera looking along world -Z
    raw["ViewLayer.Vector.Z"][1, 2] = -2.0  # Blender: current - next, x right
    raw["ViewLayer.Vector.W"][1, 2] = -1.0  # y up: the point moves up one pixel
    raw["ViewLayer.Vector.X"][1, 2] = 3.0  # Blender: previous - current, x right
    raw["ViewLayer.Vector.Y"][1, 2] = 0.5  # y up: it was half a pixel higher before
    bg = np.full((h, w, 3), 0.5, np.float32)
    K = np.array([[600.0, 0, w / 2], [0, 600, h / 2], [0, 0, 1]])
    clean = Camera(K, np.diag([1.0, -1.0, -1.0]), np.zeros(3), np.eye(4), w, h)
    out = convert_frame(raw, bg, clean, "clean")
    assert out["segm"][1, 2] == 7 and out["segm"].sum() == 7
    assert out["inst"][1, 2] == 1 and out["inst"].sum() == 1 and out["inst"].dtype == np.uint8
    assert np.allclose(out["flow"][1, 2], [2.0, -1.0])  # right 2, up 1 (image y down)
    assert np.allclose(out["normal"][1, 2], [0, 0, -1])
    assert tuple(out["rgb"][1, 2]) == (255, 0, 0) and tuple(out["rgb"][0, 0]) == (188, 188, 188)
    assert out["depth"][0, 0] == 1e10 and out["depth"][1, 2] == 3.0

    # SURREAL: mirrored left-right (column 2 of 5 -> 2: use an off-centre pixel too), raw speed pass towards
    # the previous frame with x flipped by the mirror, world normals, depth along the ray.
    surreal = Camera(K, WORLD_TO_CV["surreal"], np.zeros(3), np.eye(4), w, h, pixel_centre=0.5)
    raw["ViewLayer.Material Index.X"][3, 0] = 4
    raw["ViewLayer.Object Index.X"][3, 0] = 2
    raw["ViewLayer.Depth.Z"][3, 0] = 2.0
    out = convert_frame(raw, bg, surreal, "surreal")
    assert out["segm"][1, 2] == 7 and out["segm"][3, w - 1] == 4 and out["segm"][3, 0] == 0
    assert out["inst"][3, w - 1] == 2 and out["inst"][3, 0] == 0  # mirrored with the other passes
    assert np.allclose(out["flow"][1, 2], [-3.0, 0.5])  # x_prev - x_cur in the mirrored frame; y_cur - y_prev
    assert np.allclose(out["normal"][1, 2], [0, 0, 1])  # world frame, as Blender gives it
    u, v = (w - 1 + 0.5 - w / 2) / 600, (3 + 0.5 - h / 2) / 600
    assert np.isclose(out["depth"][3, w - 1], 2.0 * np.sqrt(1 + u * u + v * v))
    assert out["depth"][0, 0] == 1e10 and tuple(out["rgb"][0, 0]) == (188, 188, 188)


def test_srgb_table_matches_the_formula():
    x = np.linspace(-0.1, 1.1, 10007)
    assert np.abs(linear_to_srgb8(x).astype(int) - np.round(linear_to_srgb(x) * 255)).max() <= 1


def test_face_labels_take_the_majority_corner():
    labels = np.array([1, 2, 2, 3], np.uint8)
    faces = np.array([[0, 1, 2], [1, 0, 3], [0, 0, 3]])
    assert face_labels(labels, faces).tolist() == [2, 2, 1]
