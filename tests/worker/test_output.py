"""The SURREAL-format writer without Blender: layout, keys, dtypes, manifest, atomicity."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import scipy.io

from farm.core.spec import CameraSpec, ClipSpec, MotionRef
from farm.render.camera import make_camera
from farm.render.job import RenderResult
from worker import output
from worker.output import write_clip
from worker.video import read_mp4

T, H, W = 3, 240, 320
NAME = "01_01_c0002"


def spec() -> ClipSpec:
    return ClipSpec(
        name=NAME, catalog="cmu", sequence="01_01", split="test", run=2, clip_index=1, stride=70,
        frame_start=70, frame_count=T,
        motion=MotionRef(uri="x.npz", pose_key="pose_01_01", trans_key="trans_01_01", rate=120, frames=999),
        seed=1, body_model="smpl", gender="male", shape=tuple(np.linspace(-1, 1, 10)), shape_source="bank#3",
        texture="textures/m1.jpg", background="bg/kitchen1.jpg", light=tuple(np.linspace(-0.5, 0.5, 9)),
        camera=CameraSpec(distance=7.5), zrot=1.25,
    )  # fmt: skip


def fake_result() -> RenderResult:
    rng = np.random.default_rng(0)
    segm = np.zeros((T, H, W), np.uint8)
    segm[:, 100:140, 150:170] = rng.integers(1, 25, (T, 40, 20))
    fg = segm > 0
    depth = np.where(fg, 7.5, 1e10).astype(np.float32)
    return RenderResult(
        rgb=rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
        alpha=fg.astype(np.float32),
        depth=depth,
        normal=np.where(fg[..., None], [0.0, 0.0, -1.0], 0.0).astype(np.float32),
        flow=np.where(fg[..., None], [1.5, -0.5], 0.0).astype(np.float32),
        segm=segm,
        inst=fg.astype(np.uint8),
        software={"blender": "test"},
    )


def write(root, convention="surreal"):
    s = spec().model_copy(update={"convention": convention})
    cam = make_camera(s, np.array([0.0, 0.9, 0.0]))
    joints = np.random.default_rng(1).normal(size=(T, 24, 3)).astype(np.float32) * 0.3 + [0, 0.9, 0]
    poses = np.zeros((T, 72), np.float32)
    return write_clip(root, s, fake_result(), poses, joints, cam, {"blender": "test"}), cam, joints


def test_layout_keys_shapes_and_manifest(tmp_path):
    files, cam, joints = write(tmp_path)
    d = tmp_path / "cmu/test/run2/01_01"
    assert files.directory == d and files.frames == T
    names = (
        [f"{NAME}.mp4"]
        + [f"{NAME}_{s}.mat" for s in ("info", "depth", "segm", "gtflow", "normal")]
        + [f"{NAME}_thumb.jpg"]
    )
    assert [p.name for p in files.files] == [*names, f"{NAME}_manifest.json"]
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in files.files)  # no temp left over
    info = scipy.io.loadmat(d / f"{NAME}_info.mat")
    assert info["joints2D"].shape == (2, 24, T) and info["joints2D"].dtype == np.float32
    assert info["gender"].shape == (T, 1) and info["gender"].dtype == np.uint8 and info["gender"].all()
    # SURREAL's placement: camDist - 1 along +X from the frame-0 pelvis (Z-up (0, 0.9, 0) -> world (0, 0, 0.9))
    assert info["camLoc"].shape == (3, 1) and np.allclose(info["camLoc"][:, 0], [6.5, 0, 0.9], atol=1e-6)
    assert info["bg"].shape == (1, T) and str(info["cloth"][0, 2][0]) == "textures/m1.jpg"
    assert np.array_equal(info["joints2D"].transpose(2, 1, 0), np.round(cam.project(joints)))  # whole pixels
    for key in ("clipNo", "stride", "gender"):
        assert info[key].dtype == np.uint8, key  # the original's types
    assert info["zrot"].dtype == info["camDist"].dtype == info["camLoc"].dtype == np.float32
    segm = scipy.io.loadmat(d / f"{NAME}_segm.mat")
    assert sorted(k for k in segm if not k.startswith("__")) == ["segm_1", "segm_2", "segm_3"]
    assert segm["segm_2"].dtype == np.uint8 and segm["segm_2"].shape == (H, W)
    flow = scipy.io.loadmat(d / f"{NAME}_gtflow.mat")["gtflow_3"]
    assert flow.shape == (H, W, 2) and flow.dtype == np.float32
    assert read_mp4(d / f"{NAME}.mp4", W, H).shape == (T, H, W, 3)
    manifest = json.loads((d / f"{NAME}_manifest.json").read_text())
    assert manifest["spec"]["name"] == NAME and manifest["software"]["blender"] == "test"
    assert manifest["convention"] == manifest["spec"]["convention"] == "surreal"
    for entry in manifest["files"]:
        data = (d / entry["name"]).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_clean_convention_keeps_its_own_camera_and_exact_joints(tmp_path):
    files, cam, joints = write(tmp_path, "clean")
    info = scipy.io.loadmat(files.directory / f"{NAME}_info.mat")
    assert np.allclose(info["camLoc"][:, 0], [0, 0.9, 7.5])
    assert np.allclose(info["joints2D"].transpose(2, 1, 0), cam.project(joints), atol=1e-3)
    manifest = json.loads((files.directory / f"{NAME}_manifest.json").read_text())
    assert manifest["convention"] == "clean"


def test_crash_leaves_no_partial_clip_and_a_rerun_completes(tmp_path, monkeypatch):
    real = scipy.io.savemat
    calls = []

    def failing(path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(path, *a, **k)

    monkeypatch.setattr(output.scipy.io, "savemat", failing)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path)
    d = tmp_path / "cmu/test/run2/01_01"
    assert list(d.iterdir()) == []  # neither final files nor the temporary folder
    monkeypatch.setattr(output.scipy.io, "savemat", real)
    files, _, _ = write(tmp_path)
    assert (d / f"{NAME}_manifest.json").exists() and len(list(d.iterdir())) == 8


def test_writing_a_clip_twice_gives_identical_bytes(tmp_path):
    first, _, _ = write(tmp_path / "a")
    second, _, _ = write(tmp_path / "b")
    for a, b in zip(first.files, second.files, strict=True):
        assert (tmp_path / "a" / a).read_bytes() == (tmp_path / "b" / b).read_bytes(), a.name  # no timestamps
